// The mesh CA: an ECDSA P-256 root that signs workload certificates (one SPIFFE
// URI SAN each) from node-generated CSRs, and the control plane's own serving
// certificate. Private keys are exported as PKCS#8 PEM so node:tls accepts them.

import { createPublicKey, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from './x509.ts';
import { ErrorCode, InvalidObjectError, NodemeshError } from '../core/errors.ts';
import { parseIdentity } from '../core/identity.ts';
import { DEFAULT_SETTINGS } from '../core/types.ts';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DEFAULT_WORKLOAD_TTL_SECONDS = 24 * 3600;
const SERVING_TTL_SECONDS = 365 * 24 * 3600;
const ROOT_TTL_SECONDS = 10 * 365 * 24 * 3600;
// Certificates start slightly in the past so peers with a skewed clock accept them.
const BACKDATE_MS = 5 * 60 * 1000;

export interface CaKeyPair {
  /** PKCS#8 PEM. */
  keyPem: string;
  certPem: string;
}

/** Where the root is persisted (a directory in file mode, a Secret in Kubernetes). */
export interface CaStore {
  load(): Promise<CaKeyPair | null>;
  /** Stores `pair` unless a root is already stored; returns what is stored after the call, so replicas agree. */
  saveIfAbsent(pair: CaKeyPair): Promise<CaKeyPair>;
}

export interface CaOptions {
  trustDomain?: string;
}

export interface IssuedCert {
  keyPem: string;
  /** Leaf first, then the root. */
  chainPem: string;
}

export interface CheckedCsr {
  identity: string;
  publicKey: x509.PublicKey;
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootPem: string;
  readonly #root: x509.X509Certificate;
  readonly #signingKey: CryptoKey;

  private constructor(trustDomain: string, root: x509.X509Certificate, signingKey: CryptoKey) {
    this.trustDomain = trustDomain;
    this.#root = root;
    this.#signingKey = signingKey;
    this.rootPem = root.toString('pem') + '\n';
  }

  /** A new root, in memory only. */
  static async create(opts: CaOptions = {}): Promise<CertificateAuthority> {
    const pair = await generateRootPair(opts.trustDomain ?? DEFAULT_SETTINGS.trustDomain);
    return CertificateAuthority.fromPem(pair, opts);
  }

  /** Uses the stored root, or creates one and stores it; a racing writer's root wins. */
  static async loadOrCreate(store: CaStore, opts: CaOptions = {}): Promise<CertificateAuthority> {
    let pair = await store.load();
    if (!pair) pair = await store.saveIfAbsent(await generateRootPair(opts.trustDomain ?? DEFAULT_SETTINGS.trustDomain));
    return CertificateAuthority.fromPem(pair, opts);
  }

  /** A CA from an operator-supplied or stored root (PKCS#8 key, PEM certificate). */
  static async fromPem(pair: CaKeyPair, opts: CaOptions = {}): Promise<CertificateAuthority> {
    let root: x509.X509Certificate;
    try {
      root = new x509.X509Certificate(pair.certPem);
    } catch (err) {
      throw new NodemeshError(ErrorCode.BAD_CA, `CA certificate: not a PEM X.509 certificate: ${(err as Error).message}`, { cause: err });
    }
    let keyDer: Buffer;
    try {
      const keyObject = createPublicKey(pair.keyPem);
      keyDer = keyObject.export({ type: 'spki', format: 'der' });
    } catch (err) {
      throw new NodemeshError(ErrorCode.BAD_CA, `CA key: not a PEM private key: ${(err as Error).message}`, { cause: err });
    }
    if (!Buffer.from(root.publicKey.rawData).equals(keyDer)) {
      throw new NodemeshError(ErrorCode.BAD_CA, 'CA key does not match the CA certificate: check that ca-key.pem and ca-cert.pem belong together');
    }
    const signingKey = await crypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pair.keyPem), EC_P256, false, ['sign'])
      .catch((err: Error) => {
        throw new NodemeshError(ErrorCode.BAD_CA, `CA key: must be an ECDSA P-256 PKCS#8 key: ${err.message}`, { cause: err });
      });
    return new CertificateAuthority(opts.trustDomain ?? DEFAULT_SETTINGS.trustDomain, root, signingKey);
  }

  /**
   * Verifies a CSR and returns the identity it asks for: valid signature, EC P-256
   * key, exactly one SAN, a URI that is a workload SPIFFE ID of this trust domain.
   */
  async checkCsr(csrPem: string, index = 0): Promise<CheckedCsr> {
    const object = `CSR #${index}`;
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (err) {
      throw new InvalidObjectError(object, 'pem', `not a PEM PKCS#10 certificate request: ${(err as Error).message}`);
    }
    const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
    if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
      throw new InvalidObjectError(object, 'publicKey', `must be an EC P-256 key, got ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''}`);
    }
    let signatureOk = false;
    try {
      signatureOk = await csr.verify();
    } catch {
      signatureOk = false;
    }
    if (!signatureOk) throw new InvalidObjectError(object, 'signature', 'does not verify against the CSR public key');
    const names = csr.extensions
      .filter((ext): ext is x509.SubjectAlternativeNameExtension => ext instanceof x509.SubjectAlternativeNameExtension)
      .flatMap((ext) => ext.names.items);
    if (names.length !== 1) throw new InvalidObjectError(object, 'subjectAltName', `must hold exactly one URI SAN, found ${names.length} names`);
    const only = names[0]!;
    if (only.type !== 'url') throw new InvalidObjectError(object, 'subjectAltName', `must be a URI SAN (spiffe://...), got a ${only.type} name`);
    let trustDomain: string;
    try {
      trustDomain = parseIdentity(only.value).trustDomain;
    } catch (err) {
      throw new InvalidObjectError(object, 'subjectAltName', (err as Error).message);
    }
    if (trustDomain !== this.trustDomain) {
      throw new InvalidObjectError(object, 'subjectAltName', `trust domain ${JSON.stringify(trustDomain)} is not this mesh's ${JSON.stringify(this.trustDomain)}`);
    }
    return { identity: only.value, publicKey: csr.publicKey };
  }

  /** Signs a CSR (see checkCsr) for `ttlSeconds` (24 h by default). */
  async signCsr(csrPem: string, ttlSeconds = DEFAULT_WORKLOAD_TTL_SECONDS, index = 0): Promise<{ identity: string; chainPem: string }> {
    const { identity, publicKey } = await this.checkCsr(csrPem, index);
    return { identity, chainPem: await this.#issueWorkload(identity, publicKey, ttlSeconds) };
  }

  /** Generates the key itself: for tests and tools, never for workloads of a real node. */
  async issueWorkloadCert(identity: string, ttlSeconds = DEFAULT_WORKLOAD_TTL_SECONDS): Promise<IssuedCert> {
    const parsed = parseIdentity(identity);
    if (parsed.trustDomain !== this.trustDomain) {
      throw new NodemeshError(ErrorCode.BAD_IDENTITY, `identity ${identity}: trust domain is not this mesh's ${JSON.stringify(this.trustDomain)}`);
    }
    const keys = await generateKeys();
    const publicKey = await x509.PublicKey.create(keys.publicKey);
    return { keyPem: await privateKeyPem(keys.privateKey), chainPem: await this.#issueWorkload(identity, publicKey, ttlSeconds) };
  }

  /** A server certificate for the control API, with DNS and IP SANs. */
  async issueServingCert(hosts: string[]): Promise<IssuedCert> {
    if (hosts.length === 0) throw new NodemeshError(ErrorCode.BAD_SERVING_HOSTS, 'serving certificate: give at least one host name or IP');
    const keys = await generateKeys();
    const names: x509.JsonGeneralName[] = hosts.map((h) => ({ type: isIP(h) ? 'ip' : 'dns', value: h }));
    const cert = await this.#sign(await x509.PublicKey.create(keys.publicKey), SERVING_TTL_SECONDS, `CN=${hosts[0]}`, [
      new x509.SubjectAlternativeNameExtension(names, false),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
    ]);
    return { keyPem: await privateKeyPem(keys.privateKey), chainPem: this.#chain(cert) };
  }

  async #issueWorkload(identity: string, publicKey: x509.PublicKey, ttlSeconds: number): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) throw new NodemeshError(ErrorCode.BAD_TTL, `certificate TTL must be a positive number of seconds, got ${ttlSeconds}`);
    // Empty subject, as SPIFFE X.509-SVIDs have: the identity lives in the (critical) URI SAN.
    const cert = await this.#sign(publicKey, ttlSeconds, '', [
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
    ]);
    return this.#chain(cert);
  }

  async #sign(publicKey: x509.PublicKey, ttlSeconds: number, subject: string, extra: x509.Extension[]): Promise<x509.X509Certificate> {
    const now = Date.now();
    return x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject,
      issuer: this.#root.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + ttlSeconds * 1000),
      publicKey,
      signingKey: this.#signingKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        ...extra,
        await x509.SubjectKeyIdentifierExtension.create(publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#root.publicKey),
      ],
    });
  }

  #chain(leaf: x509.X509Certificate): string {
    return leaf.toString('pem') + '\n' + this.rootPem;
  }
}

async function generateRootPair(trustDomain: string): Promise<CaKeyPair> {
  const keys = await generateKeys();
  const now = Date.now();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `O=${trustDomain}, CN=nodemesh root CA`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + ROOT_TTL_SECONDS * 1000),
    keys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: await privateKeyPem(keys.privateKey), certPem: root.toString('pem') + '\n' };
}

function generateKeys(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY') + '\n';
}

// 16 random bytes with the top bit clear: a positive serial of at most 20 octets (RFC 5280).
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return Buffer.from(bytes).toString('hex');
}
