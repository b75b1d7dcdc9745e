// The two-node demo that `nodemesh demo` (cli/demo.ts) runs. Builds the
// network-namespace cluster described by examples/demo, runs the real control
// plane and node agents on it, starts servers in the pods, then runs the demo's
// steps and prints a report. With `once` it tears down after the report;
// otherwise it stays up for exploring until the command says the user is done.

import { existsSync, rmSync } from 'node:fs';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join, relative } from 'node:path';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { setLevel } from '../core/log.ts';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { startMesh, type Mesh } from './cluster/mesh.ts';
import { alive, belongsTo, listNamespacesSync, runPrefix, sweepStale } from './cluster/netns.ts';
import { serverScript, startServer } from './cluster/servers.ts';
import { DEMO_CONFIG_DIR, loadDemoSpec } from './demo-config.ts';
import { adminGet } from './demo-node-api.ts';
import type { WorkloadView } from './demo-node-api.ts';
import { fill, REPORT, ROLES, STEPS, type Demo, type StepResult } from './demo-steps.ts';

const CAPTURE_TIMEOUT_MS = 10_000;

// The report goes to stdout, what is left to clean up to stderr; a stream that
// failed (its pipe closed) is skipped from then on.
const out = (line = '') => void (process.stdout.destroyed || process.stdout.write(`${line}\n`));
const warn = (line: string) => void (process.stderr.destroyed || process.stderr.write(`${line}\n`));

/** What cli/demo.ts passes (it declares the same shape: it loads this module without the type checker). */
export interface DemoOptions {
  /** Tear down right after the report, printing the mesh's logs if a step failed. */
  once: boolean;
  /** Start of the network namespace names, lower-case letters only: the process id is appended. */
  prefix: string;
  /** The cluster's CNI profile (see integration/cluster/plan.ts); checked before anything is built. */
  cni: string;
  /** Unless once: resolves when the user is done exploring. */
  untilDone(): Promise<void>;
  /** The command that removes what a run left behind (it runs cleanupDemo), printed if the teardown did not finish. */
  cleanupCommand: string;
}

/** Runs the demo; resolves, once everything is torn down, with whether every step behaved as expected. */
export async function runDemo(opts: DemoOptions): Promise<boolean> {
  tolerateClosedOutput();
  // The report is for people; the harness's JSON info lines would only interleave with it.
  if (!process.env.NODEMESH_LOG_LEVEL) setLevel('warn');
  await cleanupDemo(opts.prefix);
  // createCluster plans before it builds: an unknown profile is refused naming the field.
  const spec: ClusterSpec = { ...loadDemoSpec(), cni: opts.cni as ClusterSpec['cni'] };
  const prefix = runPrefix(opts.prefix);
  out(`nodemesh demo: building ${spec.nodes} nodes in network namespaces ${prefix}-* from ${relative(process.cwd(), DEMO_CONFIG_DIR) || DEMO_CONFIG_DIR} (CNI profile ${spec.cni}: pods captured inside their own namespaces) …`);
  const cluster = await createCluster(spec, { prefix });
  let workDir: string | undefined;
  // Ctrl-C ends the process from the cluster's own signal handler once it is torn
  // down, and a process that dies tears its cluster down in the 'exit' hook
  // (which runs no asynchronous teardown hook): the work directory goes there
  // too, and what is left is reported on the way out, whichever way that is.
  const onExit = () => {
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
    reportTeardown(prefix, workDir, opts.cleanupCommand);
  };
  process.once('exit', onExit);
  try {
    // The control plane reads a copy of examples/demo, so edits made while exploring stay out of the repository.
    const dir = (workDir = await mkdtemp(join(tmpdir(), `${WORK_DIR_START}${prefix}-`)));
    cluster.onTeardown(() => rm(dir, { recursive: true, force: true }));
    const demo = await startDemo(cluster, dir);
    const ok = await report(demo);
    if (opts.once) {
      // The logs go with the teardown: keep their tails for whoever has to find out why.
      if (!ok) warn(await demo.mesh.logs());
    } else {
      explore(demo);
      await opts.untilDone();
      out('\ntearing down: stopping processes, deleting namespaces …');
    }
    return ok;
  } finally {
    await cluster.teardown();
    process.off('exit', onExit);
    reportTeardown(prefix, workDir, opts.cleanupCommand);
  }
}

/** Work directories are `<tmpdir>/nodemesh-<run prefix>-XXXXXX`, so a cleanup can tell whose they are. */
const WORK_DIR_START = 'nodemesh-';

/**
 * The demo's output may go before the demo does: `make demo | head -5` closes
 * the pipe after five lines, and Ctrl-C on `make demo | tee log` ends tee too.
 * A write to a closed pipe (EPIPE) must not end the process halfway through its
 * teardown, so a failed stdout or stderr is dropped: the demo runs on and tears
 * down as it would with its output in place.
 */
function tolerateClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (!stream.listeners('error').includes(ignoreOutputError)) stream.on('error', ignoreOutputError);
  }
}

function ignoreOutputError(): void {
  // The stream is destroyed by its error, and out()/warn() skip it from now on.
}

/** Says whether the run left anything; synchronous, because it also runs in the process 'exit' hook. */
function reportTeardown(prefix: string, workDir: string | undefined, cleanupCommand: string): void {
  const namespaces = listNamespacesSync().filter((ns) => belongsTo(ns, prefix));
  const dirs = workDir !== undefined && existsSync(workDir) ? [workDir] : [];
  if (namespaces.length === 0 && dirs.length === 0) {
    out(`demo torn down: no ${prefix}-* namespace, process or temporary file left`);
    return;
  }
  const left = [...(namespaces.length ? [`namespaces ${namespaces.join(' ')} (and what runs in them)`] : []), ...dirs.map((d) => `directory ${d}`)];
  warn(`nodemesh demo: teardown did not finish; left: ${left.join('; ')}`);
  warn(`  remove them (as root) with: ${cleanupCommand}`);
}

/**
 * `nodemesh demo --cleanup`: removes what runs of the demo whose process is gone
 * left behind (their namespaces, with what runs in them, and their work
 * directories); returns what it removed. Every run does this first, too.
 */
export async function cleanupDemo(base: string): Promise<string[]> {
  const removed = (await sweepStale(base)).map((ns) => `namespace ${ns}`);
  const pattern = new RegExp(`^${WORK_DIR_START}${base}(\\d+)[a-z]*-`);
  for (const entry of await readdir(tmpdir())) {
    const m = pattern.exec(entry);
    if (!m || alive(Number(m[1]))) continue;
    await rm(join(tmpdir(), entry), { recursive: true, force: true });
    removed.push(`directory ${join(tmpdir(), entry)}`);
  }
  return removed;
}

async function startDemo(cluster: Cluster, workDir: string): Promise<Demo> {
  const configDir = join(workDir, 'config');
  await cp(DEMO_CONFIG_DIR, configDir, { recursive: true, filter: (src) => src === DEMO_CONFIG_DIR || ['.yaml', '.yml'].includes(extname(src)) });
  const mesh = await startMesh(cluster, { configDir, workDir: join(workDir, 'mesh') });
  // Every container port of the Service's pods gets a server: a greeter (says
  // "hello from <pod>", then echoes) on TCP ports, an HTTP server on "http".
  const service = cluster.service(ROLES.service);
  const selected = cluster.pods.filter((p) => p.namespace === service.namespace && Object.entries(service.selector).every(([k, v]) => p.labels[k] === v));
  await Promise.all(selected.flatMap((pod) => pod.ports.map((port) =>
    startServer(cluster, `${pod.namespace}/${pod.name}`, port.name === 'http' ? 'http' : 'greeter', port.port, `${pod.namespace}/${pod.name}`))));
  const meshed = await waitForCapture(cluster, mesh);
  printCluster(cluster, mesh, meshed);
  return { cluster, mesh, workDir, configDir };
}

/** Waits until each node says it captures every meshed pod it runs (/workloads); returns those pods by node. */
async function waitForCapture(cluster: Cluster, mesh: Mesh): Promise<Map<string, WorkloadView[]>> {
  const meshed = new Map<string, WorkloadView[]>();
  for (const node of cluster.nodes) {
    const deadline = Date.now() + CAPTURE_TIMEOUT_MS;
    for (;;) {
      const workloads = await adminGet<WorkloadView[]>(cluster, node.name, '/workloads');
      meshed.set(node.name, workloads);
      const missing = workloads.filter((w) => !w.capture);
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        throw new NodemeshError(ErrorCode.DEMO_CAPTURE, `node ${node.name} did not capture ${missing.map((w) => `${w.namespace}/${w.name} (${w.ip})`).join(', ')} within ${CAPTURE_TIMEOUT_MS} ms; see its log ${mesh.logFile(`node-${node.name}`)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return meshed;
}

function printCluster(cluster: Cluster, mesh: Mesh, meshed: Map<string, WorkloadView[]>): void {
  out(`  control plane  ${mesh.controlPlaneAddress}  (netns ${cluster.controlPlane.netns})`);
  for (const node of cluster.nodes) {
    const local = new Set((meshed.get(node.name) ?? []).map((w) => w.ip));
    const pods = cluster.pods.filter((p) => p.node === node.name).map((p) => `${p.namespace}/${p.name} ${p.ip}${local.has(p.ip) ? ' (meshed)' : ' (not meshed)'}`);
    out(`  node ${node.name.padEnd(9)} ${node.ip.padEnd(13)} ${pods.join(', ')}`);
  }
  for (const svc of cluster.services) {
    out(`  service        ${svc.namespace}/${svc.name} ${svc.clusterIP}  ports ${svc.ports.map((p) => `${p.port}→${p.targetPort}`).join(', ')}`);
  }
  out();
}

/** Runs every step, prints it with ✔/✘, and says whether all behaved as expected. */
async function report(demo: Demo): Promise<boolean> {
  let passed = 0;
  for (const [i, step] of STEPS.entries()) {
    let result: StepResult;
    try {
      result = await step.run(demo);
    } catch (err) {
      result = { ok: false, evidence: `failed: ${(err as Error).message.split('\n')[0]}`, details: [] };
    }
    if (result.ok) passed++;
    out(`${result.ok ? '✔' : '✘'} ${i + 1}. ${step.title}`);
    const [evidence, details] = [' '.repeat(REPORT.evidence), ' '.repeat(REPORT.details)];
    for (const line of fill(result.evidence.split(' '), REPORT.evidence)) out(`${evidence}${line}`);
    for (const detail of result.details) out(detail.split('\n').map((l) => `${details}${l}`).join('\n'));
    out();
  }
  const ok = passed === STEPS.length;
  out(ok ? `All ${STEPS.length} steps behaved as expected.` : `${STEPS.length - passed} of ${STEPS.length} steps did not behave as expected.`);
  return ok;
}

function explore({ cluster, mesh, workDir, configDir }: Demo): void {
  const node = (name: string) => cluster.node(name).netns;
  const [first, second] = [cluster.nodes[0]!.name, (cluster.nodes[1] ?? cluster.nodes[0]!).name];
  const client = cluster.pod(ROLES.client);
  const service = cluster.service(ROLES.service);
  const tcpClient = `${process.execPath} ${serverScript('tcp-client')}`;
  out();
  out('Explore (as root, in another terminal):');
  out(`  ip netns exec ${node(first)} curl -s 127.0.0.1:15000/connections     # the admin API: also /workloads /certs /policies /config_dump`);
  out(`  ip netns exec ${node(second)} curl -s 127.0.0.1:15020/metrics | grep ^nodemesh_`);
  const tcpPort = service.ports.find((p) => p.name === ROLES.servicePort) ?? service.ports[0]!;
  const httpPort = service.ports.find((p) => p.appProtocol === 'http');
  out(`  ip netns exec ${client.netns} ${tcpClient} ${service.clusterIP} ${tcpPort.port} hi`);
  if (httpPort) out(`  ip netns exec ${client.netns} curl -s ${service.clusterIP}:${httpPort.port}/`);
  out(`  edit ${join(configDir, 'policy.yaml')} (a copy of examples/demo): the control plane applies it live`);
  out(`  logs: ${join(mesh.workDir, 'logs')}   namespaces: ip netns list | grep ${cluster.prefix}`);
  out(`  everything the demo wrote: ${workDir}`);
  out('Press Ctrl-C to tear everything down.');
}
