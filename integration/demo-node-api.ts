// What the demo reads from a running node: its admin API (127.0.0.1:15000,
// reachable only inside the node's network namespace, hence curl there), its
// Prometheus /metrics, and its nat table. Also a small parser for the
// Prometheus text format, enough to pick samples by name and labels.

import { ErrorCode, NodemeshError } from '../core/errors.ts';
import type { Cluster } from './cluster/cluster.ts';
import { ADMIN_ADDR } from './cluster/mesh.ts';

const METRICS_URL = 'http://127.0.0.1:15020/metrics';

async function curl(cluster: Cluster, node: string, url: string): Promise<string> {
  const res = await cluster.exec(cluster.node(node).netns, ['curl', '-sS', '--fail-with-body', '--max-time', '5', url], { allowFailure: true });
  if (res.code !== 0) throw new NodemeshError(ErrorCode.DEMO_NODE_API, `node ${node}: GET ${url} failed (curl exit ${res.code}): ${(res.stderr || res.stdout).trim()}`);
  return res.stdout;
}

export async function adminGet<T>(cluster: Cluster, node: string, path: string): Promise<T> {
  return JSON.parse(await curl(cluster, node, `http://${ADMIN_ADDR}${path}`)) as T;
}

export function metricsText(cluster: Cluster, node: string): Promise<string> {
  return curl(cluster, node, METRICS_URL);
}

/** One entry of a node's /connections. */
export interface ConnectionView {
  listener: string;
  reporter: string;
  source: { ip: string; workload: string | null; identity: string | null };
  destination: { ip: string; port: number; workload: string | null; identity: string | null; service: string | null };
  security: string;
}

/** One entry of a node's /certs `certificates`. */
export interface CertView {
  identity: string;
  state: string;
  serial: string | null;
  notBefore: string | null;
  notAfter: string | null;
}

export interface CertsView {
  trustBundle: { fingerprints: string[] };
  certificates: CertView[];
}

/** One entry of a node's /workloads. */
export interface WorkloadView {
  namespace: string;
  name: string;
  ip: string;
  identity: string;
  /** How the node captures it ("in-pod" or "node"); null until its capture is in place. */
  capture: string | null;
}

export interface Sample {
  /** The line as the node printed it. */
  line: string;
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Samples of metric `name` whose labels include every pair of `match`. */
export function samples(text: string, name: string, match: Record<string, string> = {}): Sample[] {
  const found: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = SAMPLE.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (m[2] ?? '').matchAll(LABEL)) labels[key!] = value!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    if (Object.entries(match).every(([k, v]) => labels[k] === v)) found.push({ line, name, labels, value: Number(m[3]) });
  }
  return found;
}

/** The sum of the samples' values. */
export function total(found: readonly Sample[]): number {
  return found.reduce((sum, s) => sum + s.value, 0);
}
