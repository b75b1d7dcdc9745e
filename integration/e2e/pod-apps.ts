// The programs end-to-end tests run in pods: the logged greeter (a server that
// says who it is and logs every connection it accepts), one-shot requests that may
// fail, bulk transfers hashed inside the pod, and an HBONE probe playing a peer.

import { fileURLToPath } from 'node:url';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import type { Cluster } from '../cluster/cluster.ts';
import type { Mesh } from '../cluster/mesh.ts';
import type { ClusterProcess } from '../cluster/processes.ts';
import { serverScript } from '../cluster/servers.ts';

const script = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));
const LOGGED_GREETER = script('logged-greeter.ts');
const TRANSFER_CLIENT = script('transfer-client.ts');
const HBONE_PROBE = script('hbone-probe.ts');

export interface LoggedGreeter {
  process: ClusterProcess;
  /** Connections the server has accepted so far. */
  accepted(): number;
}

/** Starts the logged greeter in a pod; it greets with "hello from <pod name>". */
export async function startLoggedGreeter(cluster: Cluster, podRef: string, port: number): Promise<LoggedGreeter> {
  const pod = cluster.pod(podRef);
  const proc = cluster.spawn(pod.netns, [process.execPath, LOGGED_GREETER, String(port), pod.name]);
  await proc.waitForOutput('listening');
  return { process: proc, accepted: () => proc.stdout.split('\n').filter((l) => l.startsWith('accepted from ')).length };
}

export interface Attempt {
  ok: boolean;
  /** What the server sent back. */
  output: string;
  /** The client's error report when it failed. */
  error: string;
}

/** Connects from a pod, sends `text`, half-closes and reads until the server closes; a failure is a result, not an exception. */
export async function attempt(cluster: Cluster, podRef: string, host: string, port: number, text: string): Promise<Attempt> {
  const res = await cluster.exec(cluster.pod(podRef).netns, [process.execPath, serverScript('tcp-client'), host, String(port), text], { allowFailure: true, timeoutMs: 15_000 });
  return { ok: res.code === 0, output: res.stdout, error: res.stderr.replace(/^connected\n/, '').trim() };
}

/** The server's answer to an attempt that must have worked; otherwise throws with the mesh's logs. */
export async function expectAnswer(result: Attempt, what: string, mesh: Mesh): Promise<string> {
  if (!result.ok) throw new NodemeshError(ErrorCode.E2E_REQUEST, `${what} failed: ${result.error}\n${await mesh.logs()}`);
  return result.output;
}

export interface Transfer {
  greeting: string | null;
  sentBytes: number;
  sentSha256: string;
  receivedBytes: number;
  receivedSha256: string;
}

/** Streams `bytes` random bytes from a pod to a logged greeter (or any greeting echo server) and back. */
export async function transfer(cluster: Cluster, podRef: string, host: string, port: number, bytes: number): Promise<Transfer> {
  const res = await cluster.exec(cluster.pod(podRef).netns, [process.execPath, TRANSFER_CLIENT, host, String(port), String(bytes)], { timeoutMs: 120_000 });
  return JSON.parse(res.stdout) as Transfer;
}

export interface ProbeResult {
  /** CONNECT response status; null when the tunnel never answered. */
  status: number | null;
  reply: string;
  error: string | null;
}

export interface ProbeCredentials {
  certFile: string;
  keyFile: string;
  /** Sent as `Forwarded: for=`: the source pod the peer speaks for (a workload of the certificate's identity). */
  forwardedFor?: string;
}

/** From a pod, dials `host:15008` as a peer node would and asks for a tunnel to `authority`. */
export async function probeHbone(cluster: Cluster, podRef: string, host: string, authority: string, mode: 'tls' | 'plaintext', credentials?: ProbeCredentials): Promise<ProbeResult> {
  const argv = [process.execPath, HBONE_PROBE, host, '15008', authority, mode, ...(credentials ? [credentials.certFile, credentials.keyFile, ...(credentials.forwardedFor ? [credentials.forwardedFor] : [])] : [])];
  const res = await cluster.exec(cluster.pod(podRef).netns, argv, { timeoutMs: 15_000 });
  return JSON.parse(res.stdout) as ProbeResult;
}
