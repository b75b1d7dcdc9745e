// The fairness row: does one pod flooding its node's proxy starve another pod on
// the same node? The quiet pod (`client-mesh`) sends small keep-alive HTTP
// requests at a fixed 200/s through the mesh as opaque TCP (Service `origin-tcp`)
// to the origin on n2, first alone, then while the noisy pod (`client-noisy`, on
// n1 too, annotated `nodemesh.io/max-connections: "2000"`) tries 2,500
// connections to the same Service, holds what the mesh admits and ping-pongs
// requests on all of them as fast as they come back. Each side is measured in
// rounds like the paths (one flood held through its rounds): a p99 of a few
// hundred requests moves by 2x from one run to the next on an idle machine
// (alone, quick runs: 6.8-20.4 ms). Reported: the quiet pod's latency both ways,
// medians of the rounds, and the ratio of the median p99s (target: within 2x of
// alone), every round's p99, the flood's
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
import { median } from './stats.ts';

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
  /** Medians of the rounds, field by field. */
  alone: Latency;
  under_flood: Latency;
  /** under_flood.p99_ms / alone.p99_ms; the target is <= 2. */
  p99_ratio: number;
  /** Every round's p99, in order. */
  rounds_p99_ms: { alone: number[]; under_flood: number[] };
  flood: { attempted: number; held: number; refused: number; requests_per_s: number; max_connections: number };
  /** n1's nodemesh_tcp_connections_denied_total{reason="source_limit"} over the run. */
  refused_source_limit: number;
  /** n1's nodemesh_fair_share_throttled_seconds_total over the run: how long the noisy pod was read less. */
  throttled_s: number;
  /** The same on n2, the destination node, whose inbound side reads the pod's answers to the noisy pod's tunnels less. */
  throttled_s_destination: number;
  commands: { quiet: string[]; flood: string[] };
}

/** The rounds' medians, field by field (completed and errors: summed). */
function latency(runs: LatencyResult[]): Latency {
  const mid = (key: 'p50_ms' | 'p90_ms' | 'p99_ms' | 'max_ms') => median(runs.map((r) => r[key])) ?? 0;
  const sum = (key: 'completed' | 'errors') => runs.reduce((total, r) => total + r[key], 0);
  return { p50_ms: mid('p50_ms'), p90_ms: mid('p90_ms'), p99_ms: mid('p99_ms'), max_ms: mid('max_ms'), completed: sum('completed'), errors: sum('errors') };
}

async function measureRounds(env: BenchEnv, netns: string, command: string[], rounds: number): Promise<LatencyResult[]> {
  const runs: LatencyResult[] = [];
  for (let r = 0; r < rounds; r++) runs.push(await runRate(env.cluster, netns, command));
  return runs;
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
    // The flood runs on the load CPU too: the quiet client sleeps between sends, alone as beside it.
    quiet: rateCommand(vip, HTTP_PORT, { rate: QUIET_RATE, seconds: d.loadSeconds, connections: QUIET_CONNECTIONS, sharedCpu: true }),
    flood: ['taskset', '-c', LOAD_CPU, process.execPath, FLOODER, vip, String(HTTP_PORT), String(FLOOD_CONNECTIONS)],
  };
}

export async function measureFairness(env: BenchEnv, d: Durations, rounds: number): Promise<FairnessResult> {
  const commands = fairnessCommands(env, d);
  const quietNetns = env.cluster.pod(PATH_ROUTES['nodemesh-l4'].client).netns;
  const before = await nodeCounters(env);
  const destinationBefore = await nodeCounters(env, 'n2');
  // Warm the quiet path (pooled tunnels, JIT) so "alone" is its steady state.
  const vip = env.cluster.service(PATH_ROUTES['nodemesh-l4'].service).clusterIP;
  await runRate(env.cluster, quietNetns, rateCommand(vip, HTTP_PORT, { rate: QUIET_RATE, seconds: 3, connections: QUIET_CONNECTIONS, sharedCpu: true }));
  const alone = await measureRounds(env, quietNetns, commands.quiet, rounds);
  const flooder = env.cluster.spawn(env.cluster.pod(NOISY_POD).netns, commands.flood);
  let underFlood: LatencyResult[];
  try {
    await flooder.waitForOutput(/held \d+ refused \d+/, 120_000);
    // Let the flood reach its pace (and the proxy react) before measuring.
    await new Promise((r) => setTimeout(r, 1000));
    underFlood = await measureRounds(env, quietNetns, commands.quiet, rounds);
  } finally {
    flooder.child.stdin!.end();
  }
  await flooder.waitForOutput(/"attempted"/, 10_000).catch(() => {});
  await flooder.stop();
  const after = await nodeCounters(env);
  const destinationAfter = await nodeCounters(env, 'n2');
  const aloneMedian = latency(alone);
  const underFloodMedian = latency(underFlood);
  const summary = JSON.parse(/\{"attempted".*\}/.exec(flooder.stdout)?.[0] ?? '{}') as { attempted?: number; held?: number; refused?: number; requests?: number; seconds?: number };
  return {
    rate: QUIET_RATE,
    connections: QUIET_CONNECTIONS,
    alone: aloneMedian,
    under_flood: underFloodMedian,
    p99_ratio: Math.round((underFloodMedian.p99_ms / aloneMedian.p99_ms) * 100) / 100,
    rounds_p99_ms: { alone: alone.map((r) => r.p99_ms), under_flood: underFlood.map((r) => r.p99_ms) },
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
