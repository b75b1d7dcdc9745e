// A real mesh CA for the tests of every part: the control plane's own
// CertificateAuthority, not a mock, so the certificates that tests of the agent
// and the data plane present, verify and renew are the ones a node gets from the
// control plane. Those tests may not import controlplane/ (docs/ARCHITECTURE.md,
// checked by scripts/dependency-rule.test.ts); this folder is where they meet it.

import { CertificateAuthority, type CaOptions } from '../controlplane/ca.ts';
import * as x509 from '../controlplane/x509.ts';

/** What tests use of the CA: its root, signing a node's CSRs, and certificates issued with their key. */
export type MeshCa = Pick<CertificateAuthority, 'trustDomain' | 'rootPem' | 'signCsr' | 'issueWorkloadCert'>;

/** A new root in memory (trust domain cluster.local unless told). */
export function createMeshCa(opts: CaOptions = {}): Promise<MeshCa> {
  return CertificateAuthority.create(opts);
}

const SAN_OID = '2.5.29.17';

/** A PKCS#10 request as the control plane's X.509 library reads it. */
export interface CsrReading {
  /** The signature verifies against the request's own public key. */
  verifies: boolean;
  /** The request's public key, DER SubjectPublicKeyInfo. */
  publicKeySpki: Buffer;
  subject: string;
  /** The subjectAltName extension, null when the request has none. */
  san: { critical: boolean; names: [type: string, value: string][] } | null;
}

export async function readCsr(csrPem: string): Promise<CsrReading> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const san = csr.getExtension(SAN_OID) as x509.SubjectAlternativeNameExtension | null;
  return {
    verifies: await csr.verify(),
    publicKeySpki: Buffer.from(csr.publicKey.rawData),
    subject: csr.subject,
    san: san && { critical: san.critical, names: san.names.items.map((n): [string, string] => [n.type, n.value]) },
  };
}
