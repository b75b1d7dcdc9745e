// The control plane at scale: a config directory of 10,000 pods and 1,000
// Services read by the real `nodemesh controlplane`, watched by real node agents
// (`--no-dataplane`: config and certificates only) on loopback. Measures a node's
// first full sync, how long one pod change takes to reach every watching node,
// and the memory of a node holding that config.

import { mkdtemp, rename, rm, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import { logger } from '../../core/log.ts';
import { nodemeshBinary } from '../cluster/nodemesh-binary.ts';
import { NODE_PROCESS_ENV, NODE_V8_FLAGS } from '../../agent/v8-flags.ts';
import { namespaceObject, objectFileName, podObject, serviceObject } from '../cluster/config-dir.ts';
import type { PlannedPod, PlannedService } from '../cluster/plan.ts';
import { stableUid } from '../cluster/plan.ts';
import { ProcessTracker } from '../cluster/processes.ts';
import type { ClusterProcess } from '../cluster/processes.ts';
import { LOAD_CPU, NODE_CPU } from './bench-env.ts';
import { peakRssMib, rssMib } from './proc-stats.ts';
import { median, round } from './stats.ts';

const log = logger('bench-scale');

export interface ScaleResult {
  pods: number;
  services: number;
  namespaces: number;
  nodes_in_config: number;
  nodes_watching: number;
  /** From the agent's "node agent started" (servers up, about to dial) to its config version being the snapshot's. */
  first_sync_s: number;
  /** The same from process spawn (includes Node.js start-up and module loading). */
  first_sync_from_spawn_s: number;
  /** From renaming one edited pod file into the watched directory to the last node applying it (by the agents' own log times). */
  change_to_all_nodes_ms: number;
  changes: number;
  change_samples_ms: number[];
  /** Resident memory of a node agent holding the config (max over the watching nodes), and its peak. */
  node_rss_mib: number;
  node_peak_rss_mib: number;
  /** The same agent's resident memory with an empty mesh (its own control plane, nothing in its config). */
  node_empty_rss_mib: number;
  /** What the config costs the node: node_rss_mib - node_empty_rss_mib. */
  node_config_mib: number;
  controlplane_rss_mib: number;
  controlplane_start_s: number;
}

const SHAPE = { pods: 10_000, services: 1_000, namespaces: 10, nodes: 100 };

function planned(prefix: string): { pods: PlannedPod[]; services: PlannedService[]; namespaces: string[] } {
  const namespaces = Array.from({ length: SHAPE.namespaces }, (_, i) => `team-${i}`);
  const podsPerService = SHAPE.pods / SHAPE.services;
  const pods: PlannedPod[] = [];
  for (let i = 0; i < SHAPE.pods; i++) {
    const app = Math.floor(i / podsPerService);
    const namespace = namespaces[app % SHAPE.namespaces]!;
    const name = `app-${app}-${i % podsPerService}`;
    pods.push({
      uid: stableUid(prefix, namespace, name), name, namespace, node: `n${(i % SHAPE.nodes) + 1}`, netns: '',
      // 10.0.0.0/8 holds the 10,000 addresses without clashing with Service VIPs.
      ip: `10.${100 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`,
      hostVeth: '', labels: { app: `app-${app}` }, annotations: {}, serviceAccount: `app-${app}`, ports: [{ name: 'http', port: 8080 }],
    });
  }
  const services: PlannedService[] = Array.from({ length: SHAPE.services }, (_, app) => ({
    name: `app-${app}`, namespace: namespaces[app % SHAPE.namespaces]!, clusterIP: `10.96.${Math.floor(app / 256)}.${app % 256}`,
    selector: { app: `app-${app}` }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: '' }], annotations: {},
  }));
  return { pods, services, namespaces };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function configVersion(metricsPort: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    const text = await res.text();
    return Number(/^nodemesh_agent_config_version (\d+)/m.exec(text)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function until<T>(what: string, timeoutMs: number, intervalMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new NodemeshError(ErrorCode.BENCH_SCALE, `scale benchmark: ${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Time (ms since epoch) of the first JSON log line with this message. */
function logTime(proc: ClusterProcess, msg: string): number | undefined {
  for (const line of proc.stderr.split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      return Date.parse((JSON.parse(line) as { time: string }).time);
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

/** Wall-clock time (ms) at which the agent logged applying config version `version` or later. */
function appliedAt(proc: ClusterProcess, version: number): number | undefined {
  for (const line of proc.stderr.split('\n')) {
    if (!line.includes('"msg":"applied an update"')) continue;
    const entry = JSON.parse(line) as { time: string; version: number };
    if (entry.version >= version) return Date.parse(entry.time);
  }
  return undefined;
}

/** `opts.env` is extra environment for the nodemesh processes (e.g. NODE_OPTIONS=--cpu-prof). */
export async function runScaleBench(prefix: string, opts: { quick: boolean; env?: Record<string, string> }): Promise<ScaleResult> {
  const watching = opts.quick ? 2 : 3;
  const changes = opts.quick ? 3 : 7;
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-scale-`));
  const procs = new ProcessTracker();
  try {
    const configDir = join(dir, 'config');
    await mkdir(configDir);
    const { pods, services, namespaces } = planned(prefix);
    const objects = [
      ...namespaces.map((name) => namespaceObject({ name, annotations: { 'nodemesh.io/mesh': 'enabled' } })),
      ...pods.map(podObject),
      ...services.map(serviceObject),
    ];
    for (let i = 0; i < objects.length; i += 500) {
      await Promise.all(objects.slice(i, i + 500).map((obj) => writeFile(join(configDir, objectFileName(obj)), stringify(obj))));
    }
    const tokens = new Map(Array.from({ length: SHAPE.nodes }, (_, i) => [`n${i + 1}`, randomBytes(16).toString('hex')]));
    await writeFile(join(dir, 'node-tokens'), [...tokens].map(([n, t]) => `${n}: ${t}`).join('\n') + '\n', { mode: 0o600 });
    const cli = await nodemeshBinary();
    const startControlPlane = async (source: string, caDir: string) => {
      const port = await freePort();
      const proc = procs.spawn(['taskset', '-c', NODE_CPU, process.execPath, cli, 'controlplane',
        '--source', source, '--listen', `127.0.0.1:${port}`, '--ca-dir', caDir, '--node-tokens', join(dir, 'node-tokens')], { env: { ...process.env, ...opts.env } });
      await proc.waitForOutput('control plane running', 120_000);
      if (!existsSync(join(caDir, 'ca-cert.pem'))) throw new NodemeshError(ErrorCode.BENCH_SCALE, `control plane wrote no CA into ${caDir}`);
      return { proc, port, caDir };
    };
    const startAgent = async (name: string, cp: { port: number; caDir: string }, tag: string) => {
      await writeFile(join(dir, `token-${name}`), `${tokens.get(name)}\n`, { mode: 0o600 });
      const [adminPort, metricsPort, healthPort] = [await freePort(), await freePort(), await freePort()];
      const proc = procs.spawn(['taskset', '-c', LOAD_CPU, process.execPath, ...NODE_V8_FLAGS, cli, 'node', '--no-dataplane',
        '--node-name', name, '--controlplane', `127.0.0.1:${cp.port}`, '--token-file', join(dir, `token-${name}`),
        '--ca-file', join(cp.caDir, 'ca-cert.pem'), '--state-dir', join(dir, `state-${tag}-${name}`),
        '--admin-addr', `127.0.0.1:${adminPort}`, '--metrics-addr', `127.0.0.1:${metricsPort}`, '--health-addr', `127.0.0.1:${healthPort}`,
      ], { env: { ...NODE_PROCESS_ENV, ...process.env, ...opts.env, NODEMESH_LOG_LEVEL: 'info', NODEMESH_DEBUG: 'config' } });
      return { name, proc, metricsPort, healthPort };
    };
    const ready = (a: { name: string; healthPort: number }) => until(`node ${a.name} ready`, 120_000, 50, async () => {
      const res = await fetch(`http://127.0.0.1:${a.healthPort}/healthz/ready`).catch(() => undefined);
      return res?.status === 200 ? true : undefined;
    });

    // The same node agent with an empty mesh: what the config costs is the difference.
    const emptyDir = join(dir, 'empty-config');
    await mkdir(emptyDir);
    const emptyCp = await startControlPlane(emptyDir, join(dir, 'empty-ca'));
    const emptyAgent = await startAgent('n1', emptyCp, 'empty');
    await ready(emptyAgent);
    await new Promise((r) => setTimeout(r, 1000));
    const emptyNodeRss = rssMib(emptyAgent.proc.pid);
    await emptyAgent.proc.stop();
    await emptyCp.proc.stop();

    const cpStart = Date.now();
    const cp = await startControlPlane(configDir, join(dir, 'ca'));
    const controlplaneStart = (Date.now() - cpStart) / 1000;

    const agents: { name: string; proc: ClusterProcess; metricsPort: number; healthPort: number }[] = [];
    const syncTimes: { fromStart: number; fromSpawn: number }[] = [];
    // One agent at a time, so each first sync is measured without the others competing.
    for (let i = 1; i <= watching; i++) {
      const spawnedAt = Date.now();
      const agent = await startAgent(`n${i}`, cp, 'scale');
      const syncedAt = await until(`node ${agent.name}'s first sync`, 60_000, 2, async () => appliedAt(agent.proc, 1));
      const startedAt = logTime(agent.proc, 'node agent started') ?? spawnedAt;
      syncTimes.push({ fromStart: (syncedAt - startedAt) / 1000, fromSpawn: (syncedAt - spawnedAt) / 1000 });
      agents.push(agent);
    }
    // Certificates of each node's local identities are being issued now; changes are
    // timed once every node reports ready (all issued), so key generation is not counted.
    for (const a of agents) await ready(a);
    await new Promise((r) => setTimeout(r, 1000));

    const samples: number[] = [];
    const changed = pods[4321]!;
    for (let c = 0; c < changes; c++) {
      const before = await Promise.all(agents.map((a) => configVersion(a.metricsPort)));
      const obj = podObject({ ...changed, labels: { ...changed.labels, revision: String(c) } });
      const file = join(configDir, objectFileName(obj));
      await writeFile(`${file}.tmp`, stringify(obj));
      const t0 = Date.now();
      await rename(`${file}.tmp`, file);
      // Arrival is the agent's own log time of applying the update (NODEMESH_DEBUG=config):
      // polling the agents' metrics every millisecond would load the CPU they run on.
      const arrivals = await Promise.all(agents.map((a, i) => until(`pod change ${c} at node ${a.name}`, 10_000, 1, async () => appliedAt(a.proc, before[i]! + 1))));
      samples.push(Math.max(...arrivals) - t0);
      await new Promise((r) => setTimeout(r, 500));
    }
    const nodeRss = round(Math.max(...agents.map((a) => rssMib(a.proc.pid))), 1)!;
    const result: ScaleResult = {
      pods: SHAPE.pods, services: SHAPE.services, namespaces: SHAPE.namespaces, nodes_in_config: SHAPE.nodes, nodes_watching: watching,
      first_sync_s: round(median(syncTimes.map((s) => s.fromStart)))!,
      first_sync_from_spawn_s: round(median(syncTimes.map((s) => s.fromSpawn)))!,
      change_to_all_nodes_ms: round(median(samples), 1)!,
      changes,
      change_samples_ms: samples.map((s) => round(s, 1)!),
      node_rss_mib: nodeRss,
      node_empty_rss_mib: round(emptyNodeRss, 1)!,
      node_config_mib: round(nodeRss - emptyNodeRss, 1)!,
      node_peak_rss_mib: round(Math.max(...agents.map((a) => peakRssMib(a.proc.pid))), 1)!,
      controlplane_rss_mib: round(rssMib(cp.proc.pid), 1)!,
      controlplane_start_s: round(controlplaneStart)!,
    };
    log.info('scale measured', { ...result });
    return result;
  } finally {
    await procs.stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}
