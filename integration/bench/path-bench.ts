// One round of measurements of one path: saturation requests/s (with the node
// daemons' CPU and sampled RSS), latency at a fixed rate, new connections per
// second, and single-stream bulk throughput.

import type { BenchEnv } from './bench-env.ts';
import type { PathName } from './bench-topology.ts';
import { HTTP_ONLY_PATHS, HTTP_PORT, IPERF_PORT, PATH_ROUTES } from './bench-topology.ts';
import { iperfCommand, rateCommand, runIperf, runRate, runWrk, wrkCommand } from './load-tools.ts';
import { cpuSeconds, rssMib } from './proc-stats.ts';

export interface Durations {
  /** Seconds of each wrk run and of the fixed-rate run. */
  loadSeconds: number;
  bulkSeconds: number;
}

export const SATURATION_CONNECTIONS = 32;
export const FIXED_RATE = 1000;
export const RATE_CONNECTIONS = 16;
const RSS_SAMPLE_MS = 200;

export interface PathRound {
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  conn_per_s: number;
  bulk_gbps: number | null;
  cpu_s_per_1k_req: number | null;
  rss_mib: number | null;
  /** Failed requests or connections across the round (should be 0). */
  errors: number;
}

/** The commands one path runs, for the report; `service` in place of the path's own (the workers row's same-node runs). */
export function pathCommands(env: BenchEnv, path: PathName, d: Durations, service = PATH_ROUTES[path].service): Record<string, string[]> {
  const vip = env.cluster.service(service).clusterIP;
  const url = `http://${vip}:${HTTP_PORT}/`;
  return {
    rps: wrkCommand(url, { connections: SATURATION_CONNECTIONS, seconds: d.loadSeconds }),
    latency: rateCommand(vip, HTTP_PORT, { rate: FIXED_RATE, seconds: d.loadSeconds, connections: RATE_CONNECTIONS }),
    conn_per_s: wrkCommand(url, { connections: SATURATION_CONNECTIONS, seconds: d.loadSeconds, closeEach: true }),
    ...(HTTP_ONLY_PATHS.includes(path) ? {} : { bulk: iperfCommand(vip, IPERF_PORT, d.bulkSeconds) }),
  };
}

/** The daemon processes of a path, grouped by node (RSS is reported per node). */
export function daemonPidsByNode(env: BenchEnv, path: PathName): number[][] {
  if (path === 'direct') return [];
  if (path === 'nginx-mtls') return env.tunnelPidsByNode();
  if (path === 'nginx-l7-mtls') return env.l7PidsByNode();
  return env.nodePids().map((pid) => [pid]);
}

export type Saturation = Pick<PathRound, 'rps' | 'cpu_s_per_1k_req' | 'rss_mib' | 'errors'>;

/** The saturation run alone (wrk, 32 keep-alive connections), with the path's daemons' CPU and sampled RSS; `service` as pathCommands. */
export async function measureSaturation(env: BenchEnv, path: PathName, d: Durations, service?: string): Promise<Saturation> {
  const netns = env.cluster.pod(PATH_ROUTES[path].client).netns;
  const byNode = daemonPidsByNode(env, path);
  const pids = byNode.flat();

  let rssPeak = 0;
  const sample = () => {
    for (const group of byNode) rssPeak = Math.max(rssPeak, group.reduce((sum, pid) => sum + rssMib(pid), 0));
  };
  sample();
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  const cpuBefore = pids.reduce((s, pid) => s + cpuSeconds(pid), 0);
  const saturation = await runWrk(env.cluster, netns, pathCommands(env, path, d, service).rps!).finally(() => clearInterval(sampler));
  const cpuUsed = pids.reduce((s, pid) => s + cpuSeconds(pid), 0) - cpuBefore;
  sample();
  return {
    rps: saturation.rps,
    cpu_s_per_1k_req: pids.length ? cpuUsed / (saturation.requests / 1000) : null,
    rss_mib: pids.length ? rssPeak : null,
    errors: saturation.errors,
  };
}

export async function measurePath(env: BenchEnv, path: PathName, d: Durations): Promise<PathRound> {
  const netns = env.cluster.pod(PATH_ROUTES[path].client).netns;
  const commands = pathCommands(env, path, d);
  const saturation = await measureSaturation(env, path, d);
  const latency = await runRate(env.cluster, netns, commands.latency!);
  const connections = await runWrk(env.cluster, netns, commands.conn_per_s!);
  const bulk = commands.bulk ? await runIperf(env.cluster, netns, commands.bulk) : null;
  return {
    ...saturation,
    p50_ms: latency.p50_ms,
    p90_ms: latency.p90_ms,
    p99_ms: latency.p99_ms,
    conn_per_s: connections.rps,
    bulk_gbps: bulk,
    errors: saturation.errors + latency.errors + connections.errors,
  };
}

/** Whether HTTP handling ran for the appProtocol http Service: the client node counted HTTP requests for it. */
export async function l7Active(env: BenchEnv): Promise<boolean> {
  const res = await env.cluster.exec(env.cluster.node('n1').netns, ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:15020/metrics']);
  const service = PATH_ROUTES['nodemesh-l7'].service;
  return res.stdout.split('\n').some((line) => line.startsWith('nodemesh_requests_total{') && line.includes(`destination_service="${service}.`) && !line.endsWith(' 0'));
}
