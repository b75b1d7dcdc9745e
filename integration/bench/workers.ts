// The workers row: does a second data-plane worker thread buy throughput? The
// nodemesh node processes are started again, not pinned to the node CPU but
// given both CPUs (the load generator on CPU 0 and the origin, control plane and
// nginx on CPU 1 still share them), once with `--workers 1` and once with
// `--workers 2`, the two alternating within each round (a restart each); each
// time the saturation req/s of nodemesh-l4 and nodemesh-l7 (the paths' wrk run,
// median of the rounds) and the ratio 2/1 (target >= 1.5x). Across the nodes
// both daemons are in every request, so with one worker each they already keep
// both cores busy; the same two paths to an origin on the client's node
// (`-same-node`: one daemon proxies both ends) show what a second worker buys
// when one node's proxy is what bounds the throughput. It restarts the mesh, so
// it runs last in the paths' cluster.

import type { BenchEnv } from './bench-env.ts';
import { ALL_CPUS } from './bench-env.ts';
import type { PathName } from './bench-topology.ts';
import { PATH_ROUTES, SAME_NODE_SERVICES } from './bench-topology.ts';
import { l7Active, measureSaturation } from './path-bench.ts';
import type { Durations, Saturation } from './path-bench.ts';
import { logger } from '../../core/log.ts';
import { median, round } from './stats.ts';

const log = logger('bench');

export const WORKER_COUNTS = [1, 2] as const;
/** What each setting measures: a path's client to its own Service or to the same-node one. */
export const WORKERS_RUNS = [
  { name: 'nodemesh-l4', path: 'nodemesh-l4', service: PATH_ROUTES['nodemesh-l4'].service },
  { name: 'nodemesh-l7', path: 'nodemesh-l7', service: PATH_ROUTES['nodemesh-l7'].service },
  { name: 'nodemesh-l4-same-node', path: 'nodemesh-l4', service: SAME_NODE_SERVICES['nodemesh-l4'] },
  { name: 'nodemesh-l7-same-node', path: 'nodemesh-l7', service: SAME_NODE_SERVICES['nodemesh-l7'] },
] as const satisfies readonly { name: string; path: PathName; service: string }[];
export const WORKERS_RUN_NAMES = WORKERS_RUNS.map((r) => r.name);
export const WORKERS_TARGET = 1.5;
/** The node's inbound (HBONE) port: one SO_REUSEPORT listener per worker is expected on it. */
const INBOUND_PORT = 15008;

/** Seconds of each path's warm-up on freshly started daemons. */
const WARM_SECONDS = 3;

type WorkersRun = (typeof WORKERS_RUNS)[number]['name'];
type Workers = (typeof WORKER_COUNTS)[number];

const nodeArgs = (workers: Workers) => ['--workers', String(workers)];

export interface WorkersSetting {
  /** The `nodemesh node` flags of this setting. */
  node_args: string[];
  /** Listening sockets on the inbound port in n2's namespace (one per worker sharing the port), the fewest over the rounds. */
  inbound_listeners: number;
  /** Medians, and each round's req/s (the spread: the cores are shared with the load generator). */
  paths: Record<WorkersRun, { rps: number | null; cpu_s_per_1k_req: number | null; rps_rounds: number[] } | null>;
}

export interface WorkersResult {
  /** The CPUs the nodemesh node processes could use. */
  node_cpus: string;
  rounds: number;
  settings: Record<`workers_${Workers}`, WorkersSetting> | null;
  /** req/s with 2 workers / with 1, per run. */
  ratio: Record<WorkersRun, number | null> | null;
  errors: number;
  /** Why the row has no numbers (e.g. the node refused the flag), or why a path's are null. */
  notes: string[];
}

async function inboundListeners(env: BenchEnv): Promise<number> {
  const res = await env.cluster.exec(env.cluster.node('n2').netns, ['ss', '-Hltn', `sport = :${INBOUND_PORT}`]);
  return res.stdout.split('\n').filter((l) => l.trim()).length;
}

/** One setting's start, warm-up and saturation runs (every one of WORKERS_RUNS): one round. */
async function measureRound(env: BenchEnv, workers: Workers, roundNo: number, d: Durations, notes: string[]): Promise<{ listeners: number; runs: Record<WorkersRun, Saturation | null> }> {
  await env.restartMesh({ nodeArgs: nodeArgs(workers), cpus: ALL_CPUS });
  // Warm both paths on the new daemons (certificates, pools, every worker's JIT) before anything is recorded.
  for (const run of WORKERS_RUNS) await measureSaturation(env, run.path, { ...d, loadSeconds: WARM_SECONDS }, run.service);
  const listeners = await inboundListeners(env);
  if (listeners !== workers) notes.push(`--workers ${workers}, round ${roundNo}: n2 had ${listeners} listener(s) on ${INBOUND_PORT}, not one per worker`);
  const runs = {} as Record<WorkersRun, Saturation | null>;
  for (const run of WORKERS_RUNS) {
    runs[run.name] = await measureSaturation(env, run.path, d, run.service);
    log.info('measured', { row: 'workers', workers, round: roundNo, run: run.name, ...runs[run.name] });
  }
  // The daemons are new each round: their request counters say whether this round's HTTP was handled as HTTP.
  if (!(await l7Active(env))) {
    notes.push(`--workers ${workers}, round ${roundNo}: HTTP handling was not active (no nodemesh_requests_total for the http Service on n1), so its nodemesh-l7 run is left out`);
    runs['nodemesh-l7'] = null;
    runs['nodemesh-l7-same-node'] = null;
  }
  return { listeners, runs };
}

export async function measureWorkers(env: BenchEnv, rounds: number, d: Durations): Promise<WorkersResult> {
  const notes: string[] = [];
  const result: WorkersResult = { node_cpus: ALL_CPUS, rounds, settings: null, ratio: null, errors: 0, notes };
  try {
    const samples = new Map(WORKER_COUNTS.map((w) => [w, { listeners: [] as number[], runs: new Map<WorkersRun, Saturation[]>(WORKERS_RUN_NAMES.map((p) => [p, []])) }]));
    // The settings alternate within each round (a restart each) so drift in the machine's load hits both alike.
    for (let r = 1; r <= rounds; r++) {
      for (const workers of WORKER_COUNTS) {
        const { listeners, runs } = await measureRound(env, workers, r, d, notes);
        const into = samples.get(workers)!;
        into.listeners.push(listeners);
        for (const name of WORKERS_RUN_NAMES) {
          result.errors += runs[name]?.errors ?? 0;
          if (runs[name]) into.runs.get(name)!.push(runs[name]);
        }
      }
    }
    const setting = (workers: Workers): WorkersSetting => {
      const { listeners, runs } = samples.get(workers)!;
      const pick = (name: WorkersRun) => {
        const got = runs.get(name)!;
        if (!got.length) return null;
        return { rps: round(median(got.map((s) => s.rps))), cpu_s_per_1k_req: round(median(got.map((s) => s.cpu_s_per_1k_req)), 4), rps_rounds: got.map((s) => s.rps) };
      };
      return { node_args: nodeArgs(workers), inbound_listeners: Math.min(...listeners), paths: Object.fromEntries(WORKERS_RUN_NAMES.map((name) => [name, pick(name)])) as WorkersSetting['paths'] };
    };
    const [one, two] = [setting(1), setting(2)];
    result.settings = { workers_1: one, workers_2: two };
    const ratio = (name: WorkersRun) => {
      const [a, b] = [one.paths[name]?.rps, two.paths[name]?.rps];
      return a && b != null ? round(b / a) : null;
    };
    result.ratio = Object.fromEntries(WORKERS_RUN_NAMES.map((name) => [name, ratio(name)])) as Record<WorkersRun, number | null>;
  } catch (err) {
    // A node that does not start with the flag leaves the row without numbers, said so, not the whole run.
    const message = err instanceof Error ? err.message : String(err);
    notes.push(`not measured: ${message.split('\n').slice(0, 12).join(' | ')}`);
    log.warn('workers row failed', { error: message });
  }
  return result;
}
