// Test helpers: a real CA, in-memory CertSources, workloads and a filled ConfigStore.

import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { CertSource, WorkloadCert } from '../../core/cert-source.ts';
import type { AuthorizationPolicy, Resource, Service, Workload } from '../../core/types.ts';
import { ConfigStore } from '../config-store.ts';
import type { MeshCa } from '../../testdata/mesh-ca.ts';

export class MemoryCertSource implements CertSource {
  readonly #certs = new Map<string, WorkloadCert>();
  #bundle: string;
  readonly #listeners: (() => void)[] = [];

  constructor(bundle: string) {
    this.#bundle = bundle;
  }

  static async issuing(ca: MeshCa, identities: string[]): Promise<MemoryCertSource> {
    const source = new MemoryCertSource(ca.rootPem);
    for (const id of identities) await source.issue(ca, id);
    return source;
  }

  async issue(ca: MeshCa, identity: string): Promise<void> {
    const { keyPem, chainPem } = await ca.issueWorkloadCert(identity);
    this.#certs.set(identity, { identity, keyPem, chainPem, notAfter: new Date(Date.now() + 86_400_000) });
    this.#listeners.forEach((l) => l());
  }

  certFor(identity: string): WorkloadCert | undefined {
    return this.#certs.get(identity);
  }

  trustBundle(): string {
    return this.#bundle;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }
}

export function workload(name: string, ip: string, node: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `uid-${name}`, namespace: 'shop', name, workloadName: name, serviceAccount: name, node, ip,
    labels: { app: name }, enrolled: true, mtlsMode: 'permissive', namedPorts: {}, ...extra,
  };
}

export function spiffe(w: Workload): string {
  return `spiffe://cluster.local/ns/${w.namespace}/sa/${w.serviceAccount}`;
}

export function applyConfig(store: ConfigStore, things: { workloads?: Workload[]; services?: Service[]; policies?: AuthorizationPolicy[] }, version = 1): void {
  const upserts: Resource[] = [
    ...(things.workloads ?? []).map((w): Resource => ({ kind: 'workload', key: w.uid, version, workload: w })),
    ...(things.services ?? []).map((s): Resource => ({ kind: 'service', key: `${s.namespace}/${s.name}`, version, service: s })),
    ...(things.policies ?? []).map((p): Resource => ({ kind: 'policy', key: `${p.namespace}/${p.name}`, version, policy: p })),
  ];
  store.apply({ epoch: 't', version, snapshot: true, upserts, removals: [] });
}

/** An echo server (half-close aware: it ends after the client ends); port 0 picks a free one. */
export async function echoServer(host: string, port = 0): Promise<{ server: net.Server; port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, () => resolve()));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => {
      sockets.forEach((s) => s.destroy());
      server.close(() => resolve());
    }),
  };
}

export function denyFrom(namespace: string, name: string, sourceNamespace: string): AuthorizationPolicy {
  return {
    namespace, name, selector: null, action: 'DENY',
    rules: [{ from: [{ principals: [], notPrincipals: [], namespaces: [sourceNamespace], notNamespaces: [], ipBlocks: [], notIpBlocks: [] }], to: [] }],
  };
}
