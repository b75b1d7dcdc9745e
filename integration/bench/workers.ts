// The workers row: does a second data-plane worker thread buy throughput? The
// nodemesh node processes are started again, not pinned to the node CPU but
// given both CPUs (the load generator on CPU 0 and the origin, control plane and
// nginx on CPU 1 still share them), once with `--workers 1` and once with
// `--workers 2`; each time the saturation req/s of nodemesh-l4 and nodemesh-l7
// (the paths' wrk run, median of the rounds) and the ratio 2/1 (target >= 1.5x).
// It restarts the mesh, so it runs last in the paths' cluster.

import type { BenchEnv } from './bench-env.ts';
import { ALL_CPUS } from './bench-env.ts';
import type { PathName } from './bench-topology.ts';
import { l7Active, measureSaturation } from './path-bench.ts';
import type { Durations, Saturation } from './path-bench.ts';
import { logger } from '../../core/log.ts';
import { median, round } from './stats.ts';

const log = logger('bench');

export const WORKER_COUNTS = [1, 2] as const;
export const WORKERS_PATHS = ['nodemesh-l4', 'nodemesh-l7'] as const satisfies readonly PathName[];
export const WORKERS_TARGET = 1.5;
/** The node's inbound (HBONE) port: one SO_REUSEPORT listener per worker is expected on it. */
const INBOUND_PORT = 15008;

type WorkersPath = (typeof WORKERS_PATHS)[number];

export interface WorkersSetting {
  /** The `nodemesh node` flags of this setting. */
  node_args: string[];
  /** Listening sockets on the inbound port in n2's namespace while it ran (one per worker sharing the port). */
  inbound_listeners: number;
  paths: Record<WorkersPath, { rps: number | null; cpu_s_per_1k_req: number | null } | null>;
}

export interface WorkersResult {
  /** The CPUs the nodemesh node processes could use. */
  node_cpus: string;
  rounds: number;
  settings: Record<`workers_${(typeof WORKER_COUNTS)[number]}`, WorkersSetting> | null;
  /** req/s with 2 workers / with 1, per path. */
  ratio: Record<WorkersPath, number | null> | null;
  errors: number;
  /** Why the row has no numbers (e.g. the node refused the flag), or why a path's are null. */
  notes: string[];
}

async function inboundListeners(env: BenchEnv): Promise<number> {
  const res = await env.cluster.exec(env.cluster.node('n2').netns, ['ss', '-Hltn', `sport = :${INBOUND_PORT}`]);
  return res.stdout.split('\n').filter((l) => l.trim()).length;
}

async function measureSetting(env: BenchEnv, workers: number, rounds: number, d: Durations, notes: string[]): Promise<{ setting: WorkersSetting; errors: number }> {
  const nodeArgs = ['--workers', String(workers)];
  await env.restartMesh({ nodeArgs, cpus: ALL_CPUS });
  // Warm both paths on the new daemons (certificates, pools, JIT) before anything is recorded.
  for (const path of WORKERS_PATHS) await measureSaturation(env, path, { ...d, loadSeconds: 1 });
  const samples = new Map<WorkersPath, Saturation[]>(WORKERS_PATHS.map((p) => [p, []]));
  const listeners = await inboundListeners(env);
  if (listeners !== workers) notes.push(`--workers ${workers}: n2 had ${listeners} listener(s) on ${INBOUND_PORT}, not one per worker`);
  let errors = 0;
  for (let r = 0; r < rounds; r++) {
    for (const path of WORKERS_PATHS) {
      const result = await measureSaturation(env, path, d);
      log.info('measured', { row: 'workers', workers, round: r + 1, path, ...result });
      errors += result.errors;
      samples.get(path)!.push(result);
    }
  }
  const active = await l7Active(env);
  if (!active) notes.push(`--workers ${workers}: HTTP handling was not active (no nodemesh_requests_total for the http Service on n1), so nodemesh-l7 is null`);
  const pick = (path: WorkersPath) => {
    const runs = samples.get(path)!;
    return { rps: round(median(runs.map((s) => s.rps))), cpu_s_per_1k_req: round(median(runs.map((s) => s.cpu_s_per_1k_req)), 4) };
  };
  return {
    setting: { node_args: nodeArgs, inbound_listeners: listeners, paths: { 'nodemesh-l4': pick('nodemesh-l4'), 'nodemesh-l7': active ? pick('nodemesh-l7') : null } },
    errors,
  };
}

export async function measureWorkers(env: BenchEnv, rounds: number, d: Durations): Promise<WorkersResult> {
  const notes: string[] = [];
  const result: WorkersResult = { node_cpus: ALL_CPUS, rounds, settings: null, ratio: null, errors: 0, notes };
  try {
    const one = await measureSetting(env, 1, rounds, d, notes);
    const two = await measureSetting(env, 2, rounds, d, notes);
    result.errors = one.errors + two.errors;
    result.settings = { workers_1: one.setting, workers_2: two.setting };
    const ratio = (path: WorkersPath) => {
      const [a, b] = [one.setting.paths[path]?.rps, two.setting.paths[path]?.rps];
      return a && b != null ? round(b / a) : null;
    };
    result.ratio = { 'nodemesh-l4': ratio('nodemesh-l4'), 'nodemesh-l7': ratio('nodemesh-l7') };
  } catch (err) {
    // A node that does not start with the flag leaves the row without numbers, said so, not the whole run.
    const message = err instanceof Error ? err.message : String(err);
    notes.push(`not measured: ${message.split('\n').slice(0, 12).join(' | ')}`);
    log.warn('workers row failed', { error: message });
  }
  return result;
}
