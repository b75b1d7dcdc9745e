// The fairness row: does one pod flooding its node's proxy starve another pod on
// the same node? The quiet pod (`client-mesh`) sends small keep-alive HTTP
// requests at a fixed 200/s through the mesh as opaque TCP (Service `origin-tcp`)
// to the origin on n2, first alone, then while the noisy pod (`client-noisy`, on
// n1 too, annotated `nodemesh.io/max-connections: "2000"`) tries 2,500
// connections to the same Service, holds what the mesh admits and ping-pongs
// requests on all of them as fast as they come back. Reported: the quiet pod's
// latency both ways and their ratio (target: p99 within 2x of alone), the flood's
// connections held and refused, n1's
// `nodemesh_tcp_connections_denied_total{reason="source_limit"}`, and how long
// each node's fair share read the flood less (n1 its requests, n2 its answers).

import { fileURLToPath } from 'node:url';
import type { BenchEnv } from './bench-env.ts';
import { LOAD_CPU } from './bench-env.ts';
import { HTTP_PORT, NOISY_MAX_CONNECTIONS, PATH_ROUTES } from './bench-topology.ts';
import { rateCommand, runRate } from './load-tools.ts';
import type { LatencyResult } from './load-tools.ts';
import type { Durations } from './path-bench.ts';

const FLOODER = fileURLToPath(new URL('./flood-client.ts', import.meta.url));
export const QUIET_RATE = 200;
/** As many as the paths' fixed-rate run: a slow response queues the next requests behind it, which counts. */
export const QUIET_CONNECTIONS = 16;
/** What the noisy pod tries to open: its cap and a quarter more, so the excess is refused. */
export const FLOOD_CONNECTIONS = NOISY_MAX_CONNECTIONS + NOISY_MAX_CONNECTIONS / 4;
export const NOISY_POD = 'client-noisy';

type Latency = Pick<LatencyResult, 'p50_ms' | 'p90_ms' | 'p99_ms' | 'max_ms' | 'completed' | 'errors'>;

export interface FairnessResult {
  rate: number;
  connections: number;
  alone: Latency;
  under_flood: Latency;
  /** under_flood.p99_ms / alone.p99_ms; the target is <= 2. */
  p99_ratio: number;
  flood: { attempted: number; held: number; refused: number; requests_per_s: number; max_connections: number };
  /** n1's nodemesh_tcp_connections_denied_total{reason="source_limit"} over the run. */
  refused_source_limit: number;
  /** n1's nodemesh_fair_share_throttled_seconds_total over the run: how long the noisy pod was read less. */
  throttled_s: number;
  /** The same on n2, the destination node, whose inbound side reads the pod's answers to the noisy pod's tunnels less. */
  throttled_s_destination: number;
  commands: { quiet: string[]; flood: string[] };
}

function latency(r: LatencyResult): Latency {
  return { p50_ms: r.p50_ms, p90_ms: r.p90_ms, p99_ms: r.p99_ms, max_ms: r.max_ms, completed: r.completed, errors: r.errors };
}

/** A node's source_limit refusals and seconds of throttling, read from its metrics port. */
async function nodeCounters(env: BenchEnv, node = 'n1'): Promise<{ refused: number; throttledS: number }> {
  const res = await env.cluster.exec(env.cluster.node(node).netns, ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:15020/metrics']);
  let refused = 0;
  let throttledS = 0;
  for (const line of res.stdout.split('\n')) {
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('nodemesh_tcp_connections_denied_total{') && line.includes('reason="source_limit"')) refused += value;
    if (line.startsWith('nodemesh_fair_share_throttled_seconds_total')) throttledS += value;
  }
  return { refused, throttledS };
}

export function fairnessCommands(env: BenchEnv, d: Durations): FairnessResult['commands'] {
  const vip = env.cluster.service(PATH_ROUTES['nodemesh-l4'].service).clusterIP;
  return {
    quiet: rateCommand(vip, HTTP_PORT, { rate: QUIET_RATE, seconds: d.loadSeconds, connections: QUIET_CONNECTIONS }),
    flood: ['taskset', '-c', LOAD_CPU, process.execPath, FLOODER, vip, String(HTTP_PORT), String(FLOOD_CONNECTIONS)],
  };
}

export async function measureFairness(env: BenchEnv, d: Durations): Promise<FairnessResult> {
  const commands = fairnessCommands(env, d);
  const quietNetns = env.cluster.pod(PATH_ROUTES['nodemesh-l4'].client).netns;
  const before = await nodeCounters(env);
  const destinationBefore = await nodeCounters(env, 'n2');
  // Warm the quiet path (pooled tunnels, JIT) so "alone" is its steady state.
  const vip = env.cluster.service(PATH_ROUTES['nodemesh-l4'].service).clusterIP;
  await runRate(env.cluster, quietNetns, rateCommand(vip, HTTP_PORT, { rate: QUIET_RATE, seconds: 3, connections: QUIET_CONNECTIONS }));
  const alone = await runRate(env.cluster, quietNetns, commands.quiet);
  const flooder = env.cluster.spawn(env.cluster.pod(NOISY_POD).netns, commands.flood);
  let underFlood: LatencyResult;
  try {
    await flooder.waitForOutput(/held \d+ refused \d+/, 120_000);
    // Let the flood reach its pace (and the proxy react) before measuring.
    await new Promise((r) => setTimeout(r, 1000));
    underFlood = await runRate(env.cluster, quietNetns, commands.quiet);
  } finally {
    flooder.child.stdin!.end();
  }
  await flooder.waitForOutput(/"attempted"/, 10_000).catch(() => {});
  await flooder.stop();
  const after = await nodeCounters(env);
  const destinationAfter = await nodeCounters(env, 'n2');
  const summary = JSON.parse(/\{"attempted".*\}/.exec(flooder.stdout)?.[0] ?? '{}') as { attempted?: number; held?: number; refused?: number; requests?: number; seconds?: number };
  return {
    rate: QUIET_RATE,
    connections: QUIET_CONNECTIONS,
    alone: latency(alone),
    under_flood: latency(underFlood),
    p99_ratio: Math.round((underFlood.p99_ms / alone.p99_ms) * 100) / 100,
    flood: {
      attempted: summary.attempted ?? FLOOD_CONNECTIONS,
      held: summary.held ?? 0,
      refused: summary.refused ?? 0,
      requests_per_s: summary.seconds ? Math.round((summary.requests ?? 0) / summary.seconds) : 0,
      max_connections: NOISY_MAX_CONNECTIONS,
    },
    refused_source_limit: after.refused - before.refused,
    throttled_s: Math.round((after.throttledS - before.throttledS) * 10) / 10,
    throttled_s_destination: Math.round((destinationAfter.throttledS - destinationBefore.throttledS) * 10) / 10,
    commands,
  };
}
