// Workload keys and CSRs, made on the node so private keys never leave it:
// ECDSA P-256, one SPIFFE URI SAN, key exported as PKCS#8 PEM for node:tls.

import * as x509 from '../core/x509.ts';

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface KeyAndCsr {
  /** PKCS#8 PEM. */
  keyPem: string;
  csrPem: string;
  /** DER SubjectPublicKeyInfo, to check that a returned certificate certifies this key. */
  publicKeySpki: Buffer;
}

export async function generateKeyAndCsr(identity: string): Promise<KeyAndCsr> {
  const keys = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: SIGNING,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], true)],
  });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  const spki = await crypto.subtle.exportKey('spki', keys.publicKey);
  return {
    keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    csrPem: csr.toString('pem'),
    publicKeySpki: Buffer.from(spki),
  };
}
