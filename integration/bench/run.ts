// `make bench`: builds the two-node namespace cluster and measures, under the same
// CPU pinning, each path from a client pod on n1 to an origin pod on n2 (direct,
// nginx-mtls, nginx-l7-mtls, nodemesh-l4, nodemesh-l7), a quiet pod beside a
// flooding one (fairness), nodemesh with one and two data-plane workers on both
// CPUs (workers), then the control plane at scale. Writes
// results/<date>.json (medians of the rounds) and results/<date>.md (the table).
//
//   node integration/bench/run.ts [--quick] [--rounds N] [--paths a,b] [--skip-paths] [--skip-fairness] [--skip-workers] [--skip-scale] [--cpu-prof DIR]

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { logger } from '../../core/log.ts';
import { runPrefix, sweepStale } from '../cluster/netns.ts';
import { LOAD_CPU, NODE_CPU, startBenchEnv } from './bench-env.ts';
import type { BenchEnv } from './bench-env.ts';
import { PATHS } from './bench-topology.ts';
import type { PathName } from './bench-topology.ts';
import { l7Active, measurePath, pathCommands } from './path-bench.ts';
import type { Durations, PathRound } from './path-bench.ts';
import { pin } from './proc-stats.ts';
import { meshRatios, renderReport } from './report.ts';
import type { BenchResults, PathResult } from './report.ts';
import { runScaleBench } from './scale.ts';
import { median, round } from './stats.ts';
import { measureTunnelMemory } from './tunnel-memory.ts';
import { measureFairness } from './fairness.ts';
import { measureWorkers } from './workers.ts';

const log = logger('bench');
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    'skip-paths': { type: 'boolean', default: false },
    'skip-scale': { type: 'boolean', default: false },
    // The fairness row runs in the paths' cluster, after them; alone with --skip-paths.
    'skip-fairness': { type: 'boolean', default: false },
    // The workers row restarts the mesh on both CPUs, last in the paths' cluster; it runs with --skip-paths too.
    'skip-workers': { type: 'boolean', default: false },
    // Comma-separated subset of the paths, for profiling one of them.
    paths: { type: 'string' },
    // Writes a V8 CPU profile of every nodemesh process into this directory.
    'cpu-prof': { type: 'string' },
  },
});
const rounds = Number(flags.rounds ?? (flags.quick ? 1 : 3));
const selected = flags.paths ? PATHS.filter((p) => flags.paths!.split(',').includes(p)) : PATHS;
const nodeEnv: Record<string, string> = flags['cpu-prof'] ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${flags['cpu-prof']}` } : {};
const durations: Durations = flags.quick ? { loadSeconds: 3, bulkSeconds: 3 } : { loadSeconds: 10, bulkSeconds: 10 };

function commit(): string {
  const head = execFileSync('git', ['-C', REPO, 'rev-parse', '--short=12', 'HEAD']).toString().trim();
  const dirty = execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--untracked-files=no', '--', 'agent', 'daemon', 'controlplane', 'core']).toString().trim();
  return dirty ? `${head}+dirty` : head;
}

/** A command as a reader can rerun it: `node` for this Node.js, paths relative to the repository. */
function portable(argv: string[]): string[] {
  return argv.map((arg) => (arg === process.execPath ? 'node' : arg.startsWith(REPO) ? arg.slice(REPO.length) : arg));
}

function noPaths(): BenchResults['paths'] {
  return Object.fromEntries(PATHS.map((p) => [p, null])) as BenchResults['paths'];
}

type PathsPart = Partial<Pick<BenchResults, 'paths' | 'ratios' | 'notes' | 'commands' | 'tunnel_memory' | 'errors' | 'fairness' | 'workers'>>;

async function benchPaths(prefix: string): Promise<PathsPart> {
  const env = await startBenchEnv(prefix, nodeEnv);
  try {
    const part = flags['skip-paths'] ? {} : await measurePaths(env);
    if (!flags['skip-fairness']) part.fairness = await benchFairness(env);
    if (!flags['skip-workers']) {
      part.workers = await measureWorkers(env, rounds, durations);
      part.errors = (part.errors ?? 0) + part.workers.errors;
    }
    return part;
  } finally {
    await env.teardown();
  }
}

async function measurePaths(env: BenchEnv): Promise<PathsPart> {
  // Memory first, on fresh daemons: once HTTP handling has run, the V8 heap it grew
  // stays resident and would be charged to the held connections.
  const enrolled = env.cluster.pods.filter((p) => p.annotations['nodemesh.io/mesh'] === 'enabled').length;
  const measured = await measureTunnelMemory(env, enrolled);
  const memory = { ...measured, command: portable(measured.command) };
  const samples = new Map<PathName, PathRound[]>(PATHS.map((p) => [p, []]));
  const notes: Record<string, string> = {};
  // Warm every path (TLS sessions, pools, JIT) before anything is recorded.
  for (const path of selected) await measurePath(env, path, { loadSeconds: 1, bulkSeconds: 1 });
  let errors = 0;
  for (let r = 0; r < rounds; r++) {
    // Paths alternate within each round so drift in the machine's load hits all of them alike.
    for (const path of selected) {
      const result = await measurePath(env, path, durations);
      log.info('measured', { round: r + 1, path, ...result });
      errors += result.errors;
      samples.get(path)!.push(result);
    }
  }
  const active = await l7Active(env);
  const paths = noPaths();
  for (const path of selected) {
    const runs = samples.get(path)!;
    const pick = (key: keyof PathRound) => round(median(runs.map((s) => s[key])));
    const result: PathResult = {
      rps: pick('rps'), p50_ms: pick('p50_ms'), p90_ms: pick('p90_ms'), p99_ms: pick('p99_ms'),
      conn_per_s: pick('conn_per_s'), bulk_gbps: pick('bulk_gbps'), cpu_s_per_1k_req: round(median(runs.map((s) => s.cpu_s_per_1k_req)), 4), rss_mib: pick('rss_mib'),
    };
    if (path === 'nodemesh-l7' && !active) {
      paths[path] = null;
      notes[path] = 'HTTP handling is not active in the data plane yet: requests to the appProtocol http Service were carried as opaque TCP (no nodemesh_requests_total on the client node), so an L7 number would repeat nodemesh-l4';
    } else {
      paths[path] = result;
    }
    if (path === 'nodemesh-l7' && active) notes[path] = 'bulk_gbps is null: iperf3 is not HTTP, and the Service port is appProtocol http';
    if (path === 'nginx-l7-mtls') notes[path] = 'bulk_gbps is null: iperf3 is not HTTP, and this chain proxies HTTP only';
  }
  const commands = Object.fromEntries(PATHS.map((p) => [p, Object.fromEntries(Object.entries(pathCommands(env, p, durations)).map(([k, argv]) => [k, portable(argv)]))]));
  return { paths, ratios: meshRatios(paths), notes, commands, tunnel_memory: memory, errors };
}

/** Last: a flood leaves the daemons warm and their heaps grown. */
async function benchFairness(env: BenchEnv): Promise<BenchResults['fairness']> {
  const result = await measureFairness(env, durations, rounds);
  log.info('measured', { row: 'fairness', ...result, commands: undefined });
  return { ...result, commands: { quiet: portable(result.commands.quiet), flood: portable(result.commands.flood) } };
}

async function main(): Promise<void> {
  // The harness and every load generator it starts run on the load CPU; the
  // environment moves what runs on the nodes to the node CPU.
  pin(process.pid, LOAD_CPU);
  await sweepStale('nmb');
  const started = new Date();
  const results: BenchResults = {
    date: started.toISOString(),
    // The machine's cores, not this process's affinity (it is pinned to the load CPU).
    cores: cpus().length,
    commit: commit(),
    pinning: { load_generators: `cpu ${LOAD_CPU}`, nodes: `cpu ${NODE_CPU} (nodemesh node and control plane, nginx stream and http chains, origin nginx and iperf3; the workers row moves the nodemesh node processes to both cpus)` },
    mode: flags.quick ? 'quick' : 'full',
    rounds,
    durations_s: durations,
    paths: noPaths(),
    ratios: {},
    notes: {},
    commands: {},
    tunnel_memory: null,
    fairness: null,
    workers: null,
    scale: null,
    errors: 0,
  };
  if (!flags['skip-paths'] || !flags['skip-fairness'] || !flags['skip-workers']) {
    Object.assign(results, await benchPaths(runPrefix('nmb')));
  }
  if (!flags['skip-scale']) results.scale = await runScaleBench(runPrefix('nmb', 's'), { quick: flags.quick, env: nodeEnv });
  results.duration_s = Math.round((Date.now() - started.getTime()) / 1000);

  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..*/, '');
  const name = `${stamp}${flags.quick ? '-quick' : ''}`;
  writeFileSync(`${RESULTS_DIR}${name}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const report = renderReport(results);
  writeFileSync(`${RESULTS_DIR}${name}.md`, report);
  process.stdout.write(`${report}\nwrote ${RESULTS_DIR}${name}.json\n`);
}

await main();
