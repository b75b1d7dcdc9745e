// The certificates a data-plane worker serves with: a copy of the agent's,
// replaced whole by the main thread after every change (workers.ts). Keys never
// leave the node's process: workers are threads of it.

import type { CertSource, WorkloadCert } from '../core/cert-source.ts';

/** What the main thread pushes: every local workload's certificate and the trust bundle. */
export interface CertSet {
  certs: WorkloadCert[];
  trustBundle: string;
}

/** The certificates of `identities` (those issued) and the trust bundle, as `source` has them now. */
export function certSetOf(source: CertSource, identities: Iterable<string>): CertSet {
  const certs: WorkloadCert[] = [];
  for (const identity of new Set(identities)) {
    const cert = source.certFor(identity);
    if (cert) certs.push(cert);
  }
  return { certs, trustBundle: source.trustBundle() };
}

export class CertReplica implements CertSource {
  #certs = new Map<string, WorkloadCert>();
  #trustBundle = '';
  readonly #listeners: (() => void)[] = [];

  constructor(initial: CertSet) {
    this.#load(initial);
  }

  replace(set: CertSet): void {
    this.#load(set);
    for (const listener of this.#listeners) listener();
  }

  certFor(identity: string): WorkloadCert | undefined {
    return this.#certs.get(identity);
  }

  trustBundle(): string {
    return this.#trustBundle;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  #load(set: CertSet): void {
    this.#certs = new Map(set.certs.map((c) => [c.identity, c]));
    this.#trustBundle = set.trustBundle;
  }
}
