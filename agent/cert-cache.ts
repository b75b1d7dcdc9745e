// The workload certificates and their keys, kept across a restart of the node
// agent's container so a node restarted while the control plane is down keeps
// serving its pods: one file, mode 0600, in a directory the DaemonSet mounts
// from a memory-backed emptyDir (medium: Memory). The volume outlives container
// restarts of the pod but never reaches the image or the host's disk, and it
// goes with the pod. What is read back is trusted no more than what the control
// plane sends: each certificate must still name exactly its identity, certify
// its key and be unexpired, or it is dropped.

import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { chmod, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { uriSans } from '../core/identity.ts';
import { logger } from '../core/log.ts';

const log = logger('certs');
const FILE = 'certificates.json';

export interface CachedCert {
  identity: string;
  keyPem: string;
  chainPem: string;
}

export interface CertCacheContents {
  trustBundle: string;
  certs: CachedCert[];
}

export class CertCache {
  readonly #path: string;
  #writing: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.#path = join(dir, FILE);
  }

  /** What was kept, with every certificate that no longer checks out left out (and logged). */
  read(): CertCacheContents {
    let parsed: Partial<CertCacheContents>;
    try {
      parsed = JSON.parse(readFileSync(this.#path, 'utf8')) as Partial<CertCacheContents>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('ignoring an unreadable certificate cache', { path: this.#path, error: (err as Error).message });
      return { trustBundle: '', certs: [] };
    }
    const certs = (Array.isArray(parsed.certs) ? parsed.certs : []).filter((c): c is CachedCert => {
      const problem = checkCached(c);
      if (problem) log.warn('dropped a kept certificate', { identity: (c as CachedCert)?.identity, reason: problem });
      return problem === undefined;
    });
    return { trustBundle: typeof parsed.trustBundle === 'string' ? parsed.trustBundle : '', certs };
  }

  /** Replaces what is kept; writes are serialized, each whole (a temporary file renamed into place). */
  write(contents: CertCacheContents): Promise<void> {
    const next = this.#writing.then(async () => {
      const temporary = `${this.#path}.${process.pid}.tmp`;
      await writeFile(temporary, JSON.stringify(contents), { mode: 0o600 });
      await chmod(temporary, 0o600);
      await rename(temporary, this.#path);
    });
    this.#writing = next.catch((err: Error) => log.warn('cannot keep the certificates for a restart', { path: this.#path, error: err.message }));
    return this.#writing;
  }
}

/** Why a kept certificate cannot be used, or undefined when it can. */
function checkCached(c: unknown): string | undefined {
  const cert = c as Partial<CachedCert>;
  if (typeof cert?.identity !== 'string' || typeof cert.keyPem !== 'string' || typeof cert.chainPem !== 'string') return 'malformed entry';
  try {
    const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(cert.chainPem)?.[0];
    if (!leafPem) return 'no certificate in the chain';
    const leaf = new X509Certificate(leafPem);
    const uris = uriSans(leaf.subjectAltName);
    if (uris.length !== 1 || uris[0] !== cert.identity) return `URI SAN ${JSON.stringify(uris)} is not the identity`;
    if (leaf.validToDate.getTime() <= Date.now()) return 'expired';
    const spki = (key: Parameters<typeof createPublicKey>[0]) => createPublicKey(key).export({ type: 'spki', format: 'der' });
    if (!spki(createPrivateKey(cert.keyPem)).equals(spki(leafPem))) return 'the key is not the certificate\'s';
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}
