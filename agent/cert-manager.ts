// Workload certificates of this node: one key and certificate per identity of
// the local enrolled workloads. Keys are generated here and never leave the node
// (the control plane sees CSRs); with a cache (cert-cache.ts, a memory-backed
// volume) they survive a restart of the agent's container. Missing certificates
// are requested together in one Sign call, each answer is checked (SAN and key)
// before use, certificates are renewed at half-life with jitter, and failures
// are retried with backoff.

import { X509Certificate, createPublicKey } from 'node:crypto';
import type { CertSource, WorkloadCert } from '../core/cert-source.ts';
import { uriSans } from '../core/identity.ts';
import { debug, logger } from '../core/log.ts';
import type { ConfigStore } from '../daemon/config-store.ts';
import { Backoff } from './backoff.ts';
import { generateKeyAndCsr } from './csr.ts';
import type { CertCache } from './cert-cache.ts';
import type { KeyAndCsr } from './csr.ts';

const log = logger('certs');
// NODEMESH_DEBUG=certs: each Sign call (which identities, and why) and each renewal scheduled.
const trace = debug('certs');

export interface SignedCertificate {
  identity: string;
  /** PEM, leaf first. */
  certChain: string;
}

export interface SignResult {
  certificates: SignedCertificate[];
  trustBundle: string;
}

/** Who signs CSRs: the control-plane client. */
export interface Signer {
  sign(csrs: string[]): Promise<SignResult>;
}

export type CertState = 'pending' | 'valid' | 'renewing' | 'expired' | 'failed';

export interface CertStatus {
  identity: string;
  state: CertState;
  serial: string | null;
  notBefore: string | null;
  notAfter: string | null;
  renewAt: string | null;
  lastError: string | null;
}

interface IssuedCert extends WorkloadCert {
  notBefore: Date;
  serial: string;
}

interface Entry {
  identity: string;
  cert?: IssuedCert;
  /** Epoch ms: when to request a new certificate (0: now). */
  renewAt: number;
  /** Epoch ms: no request before this, after a failure. */
  retryAt: number;
  lastError?: string;
  backoff: Backoff;
}

// setTimeout's limit; renewals further out are re-checked when the timer fires.
const MAX_TIMER_MS = 2 ** 31 - 1;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export class CertManager implements CertSource {
  readonly #store: ConfigStore;
  readonly #signer: Signer;
  readonly #entries = new Map<string, Entry>();
  readonly #listeners: (() => void)[] = [];
  #trustBundle = '';
  #inFlight = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  readonly #cache: CertCache | undefined;

  constructor(opts: { store: ConfigStore; signer: Signer; cache?: CertCache }) {
    this.#store = opts.store;
    this.#signer = opts.signer;
    this.#cache = opts.cache;
    if (opts.cache) this.#restore(opts.cache);
  }

  /** Certificates kept from before a restart serve at once; renewal follows their own half-life. */
  #restore(cache: CertCache): void {
    const kept = cache.read();
    this.#trustBundle = kept.trustBundle;
    for (const { identity, keyPem, chainPem } of kept.certs) {
      const leaf = new X509Certificate(chainPem.match(PEM_CERT)![0]!);
      const cert: IssuedCert = { identity, keyPem, chainPem, notBefore: leaf.validFromDate, notAfter: leaf.validToDate, serial: leaf.serialNumber.toLowerCase() };
      this.#entries.set(identity, { identity, cert, renewAt: renewalTime(cert), retryAt: 0, backoff: new Backoff({ initialMs: 200, maxMs: 30_000 }) });
      log.info('certificate kept from before the restart', { identity, serial: cert.serial, notAfter: cert.notAfter.toISOString() });
    }
  }

  /** Follows the store: certificates appear and disappear with local workloads. */
  start(): void {
    this.#store.onChange(() => this.#reconcile());
    this.#reconcile();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  certFor(identity: string): WorkloadCert | undefined {
    const cert = this.#entries.get(identity)?.cert;
    return cert && cert.notAfter.getTime() > Date.now() ? cert : undefined;
  }

  trustBundle(): string {
    return this.#trustBundle;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** True when every identity of the local enrolled workloads has a currently valid certificate. */
  allIssued(): boolean {
    return [...this.#desiredIdentities()].every((id) => this.certFor(id) !== undefined);
  }

  status(): CertStatus[] {
    const now = Date.now();
    return [...this.#entries.values()].map((e) => ({
      identity: e.identity,
      state: stateOf(e, now),
      serial: e.cert?.serial ?? null,
      notBefore: e.cert?.notBefore.toISOString() ?? null,
      notAfter: e.cert?.notAfter.toISOString() ?? null,
      renewAt: e.cert ? new Date(e.renewAt).toISOString() : null,
      lastError: e.lastError ?? null,
    }));
  }

  /** SHA-256 fingerprints of the roots in the trust bundle. */
  trustBundleFingerprints(): string[] {
    return (this.#trustBundle.match(PEM_CERT) ?? []).map((pem) => new X509Certificate(pem).fingerprint256);
  }

  #desiredIdentities(): Set<string> {
    return new Set(this.#store.localWorkloads().map((w) => this.#store.identityOf(w)));
  }

  #reconcile(): void {
    if (this.#stopped) return;
    // A reconcile requested during a Sign call happens when the call finishes.
    if (this.#inFlight) return;
    clearTimeout(this.#timer);
    const desired = this.#desiredIdentities();
    let dropped = false;
    for (const identity of this.#entries.keys()) {
      if (!desired.has(identity)) {
        this.#entries.delete(identity);
        dropped = true;
        log.info('dropped certificate: identity no longer runs on this node', { identity });
      }
    }
    for (const identity of desired) {
      if (!this.#entries.has(identity)) {
        this.#entries.set(identity, { identity, renewAt: 0, retryAt: 0, backoff: new Backoff({ initialMs: 200, maxMs: 30_000 }) });
      }
    }
    if (dropped) this.#emit();

    const now = Date.now();
    const due = [...this.#entries.values()].filter((e) => dueAt(e) <= now);
    if (due.length > 0) {
      this.#inFlight = true;
      void this.#issue(due).finally(() => {
        this.#inFlight = false;
        this.#reconcile();
      });
      return;
    }
    const next = Math.min(...[...this.#entries.values()].map(dueAt));
    if (Number.isFinite(next)) {
      this.#timer = setTimeout(() => this.#reconcile(), Math.min(MAX_TIMER_MS, Math.max(0, next - now)));
      this.#timer.unref();
    }
  }

  async #issue(entries: Entry[]): Promise<void> {
    const requests = new Map<string, KeyAndCsr>();
    for (const e of entries) requests.set(e.identity, await generateKeyAndCsr(e.identity));
    trace('requesting certificates', { requests: entries.map((e) => ({ identity: e.identity, reason: e.lastError ? 'retry' : e.cert ? 'renewal' : 'new' })) });
    let result: SignResult;
    try {
      result = await this.#signer.sign([...requests.values()].map((r) => r.csrPem));
    } catch (err) {
      for (const e of entries) this.#failed(e, `Sign call failed: ${(err as Error).message}`);
      log.warn('certificate request failed; will retry (check the control-plane connection and that these pods run on this node)', {
        identities: entries.map((e) => e.identity), error: (err as Error).message,
      });
      return;
    }
    if (this.#stopped) return;
    let changed = false;
    if (result.trustBundle && result.trustBundle !== this.#trustBundle) {
      this.#trustBundle = result.trustBundle;
      changed = true;
    }
    const answered = new Set<string>();
    for (const signed of result.certificates) {
      const request = requests.get(signed.identity);
      const entry = this.#entries.get(signed.identity);
      if (!request || !entry || answered.has(signed.identity)) {
        log.warn('discarded a certificate that was not asked for', { identity: signed.identity });
        continue;
      }
      answered.add(signed.identity);
      try {
        entry.cert = checkIssued(signed, request);
      } catch (err) {
        this.#failed(entry, (err as Error).message);
        log.error('discarded a certificate from the control plane', { identity: signed.identity, error: (err as Error).message });
        continue;
      }
      entry.renewAt = renewalTime(entry.cert);
      entry.retryAt = 0;
      entry.lastError = undefined;
      entry.backoff.reset();
      changed = true;
      log.info('certificate issued', { identity: entry.identity, serial: entry.cert.serial, notAfter: entry.cert.notAfter.toISOString() });
      trace('renewal scheduled', { identity: entry.identity, serial: entry.cert.serial, renewAt: new Date(entry.renewAt).toISOString() });
    }
    for (const e of entries) {
      if (!answered.has(e.identity) && this.#entries.get(e.identity) === e) {
        this.#failed(e, 'the control plane returned no certificate for this identity');
        log.warn('no certificate returned; will retry (the control plane signs only identities of pods it sees on this node)', { identity: e.identity });
      }
    }
    if (changed) this.#emit();
  }

  #failed(entry: Entry, error: string): void {
    entry.lastError = error;
    entry.retryAt = Date.now() + entry.backoff.next();
  }

  #emit(): void {
    void this.#cache?.write({
      trustBundle: this.#trustBundle,
      certs: [...this.#entries.values()].flatMap((e) => (e.cert ? [{ identity: e.identity, keyPem: e.cert.keyPem, chainPem: e.cert.chainPem }] : [])),
    });
    for (const l of this.#listeners) {
      try {
        l();
      } catch (err) {
        log.error('certificate listener failed', { error: String((err as Error)?.stack ?? err) });
      }
    }
  }
}

function dueAt(e: Entry): number {
  return Math.max(e.cert ? e.renewAt : 0, e.retryAt);
}

function stateOf(e: Entry, now: number): CertState {
  if (!e.cert) return e.lastError ? 'failed' : 'pending';
  if (e.cert.notAfter.getTime() <= now) return 'expired';
  return now >= e.renewAt ? 'renewing' : 'valid';
}

/**
 * Half-life, ±10%, which spreads the renewals of many workloads apart. Counted
 * from receipt when notBefore is earlier: CAs backdate certificates for clock
 * skew, and a short-lived certificate must not look due the moment it arrives.
 */
function renewalTime(cert: IssuedCert): number {
  const start = Math.max(cert.notBefore.getTime(), Date.now());
  const lifetime = cert.notAfter.getTime() - start;
  return start + lifetime * 0.5 * (0.9 + Math.random() * 0.2);
}

/** Accepts a signed chain only if its leaf names exactly the identity asked for and certifies our key. */
function checkIssued(signed: SignedCertificate, request: KeyAndCsr): IssuedCert {
  const leafPem = signed.certChain.match(PEM_CERT)?.[0];
  if (!leafPem) throw new Error(`certificate for ${signed.identity}: certChain holds no PEM certificate`);
  const leaf = new X509Certificate(leafPem);
  const uris = uriSans(leaf.subjectAltName);
  if (uris.length !== 1 || uris[0] !== signed.identity) {
    throw new Error(`certificate for ${signed.identity}: URI SAN is ${JSON.stringify(uris)}, expected exactly [${JSON.stringify(signed.identity)}]`);
  }
  const certKey = createPublicKey(leafPem).export({ type: 'spki', format: 'der' });
  if (!certKey.equals(request.publicKeySpki)) {
    throw new Error(`certificate for ${signed.identity}: certifies a different public key than the CSR this node sent`);
  }
  if (leaf.validToDate.getTime() <= Date.now()) {
    throw new Error(`certificate for ${signed.identity}: already expired at ${leaf.validToDate.toISOString()}`);
  }
  return {
    identity: signed.identity,
    keyPem: request.keyPem,
    chainPem: signed.certChain,
    notBefore: leaf.validFromDate,
    notAfter: leaf.validToDate,
    serial: leaf.serialNumber.toLowerCase(),
  };
}
