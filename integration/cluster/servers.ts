// Test servers and a client in pods: the scripts of integration/servers, started
// with the running Node binary so pods need nothing installed.

import { fileURLToPath } from 'node:url';
import type { Cluster } from './cluster.ts';
import type { ClusterProcess } from './processes.ts';

export type ServerKind = 'echo' | 'http' | 'greeter';

export function serverScript(kind: ServerKind | 'tcp-client'): string {
  const file = kind === 'tcp-client' ? 'tcp-client.ts' : `${kind}-server.ts`;
  return fileURLToPath(new URL(`../servers/${file}`, import.meta.url));
}

/** Where to run a server: a pod ("name" or "namespace/name") or any namespace of the cluster. */
export type Place = string | { netns: string };

/**
 * Starts a server and waits until it listens. `name` is what http and greeter
 * servers report; default the pod reference.
 */
export async function startServer(cluster: Cluster, place: Place, kind: ServerKind, port: number, name?: string): Promise<ClusterProcess> {
  const netns = typeof place === 'string' ? cluster.pod(place).netns : place.netns;
  const label = name ?? (typeof place === 'string' ? place : place.netns);
  const proc = cluster.spawn(netns, [process.execPath, serverScript(kind), String(port), label]);
  await proc.waitForOutput('listening');
  return proc;
}

/** Connects from a namespace, sends `text`, half-closes and returns what came back before the server closed. */
export async function tcpRequest(cluster: Cluster, netns: string, host: string, port: number, text = ''): Promise<string> {
  const res = await cluster.exec(netns, [process.execPath, serverScript('tcp-client'), host, String(port), text], { timeoutMs: 15_000 });
  return res.stdout;
}

/** An interactive connection: write a line, read its echo; close() ends the client. */
export interface OpenConnection {
  process: ClusterProcess;
  /** Sends `line` and waits until the output has grown by a line containing it. */
  roundTrip(line: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function openConnection(cluster: Cluster, netns: string, host: string, port: number): Promise<OpenConnection> {
  const proc = cluster.spawn(netns, [process.execPath, serverScript('tcp-client'), host, String(port), '-']);
  await proc.waitForOutput('connected');
  return {
    process: proc,
    async roundTrip(line, timeoutMs = 5000) {
      const seen = proc.stdout.length;
      proc.child.stdin!.write(`${line}\n`);
      await proc.waitForOutput(new RegExp(`[\\s\\S]{${seen}}[\\s\\S]*${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`), timeoutMs);
    },
    async close() {
      proc.child.stdin!.end();
      await proc.stop();
    },
  };
}
