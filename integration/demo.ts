// The two-node demo that `nodemesh demo` (cli/demo.ts) runs. Builds the
// network-namespace cluster described by examples/demo, runs the real control
// plane and node agents on it, starts servers in the pods, then runs the demo's
// steps and prints a report. With `once` it tears down after the report;
// otherwise it stays up for exploring until the command says the user is done.

import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join, relative } from 'node:path';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { setLevel } from '../core/log.ts';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import { startMesh, type Mesh } from './cluster/mesh.ts';
import { belongsTo, listNamespaces, runPrefix, sweepStale } from './cluster/netns.ts';
import { serverScript, startServer } from './cluster/servers.ts';
import { DEMO_CONFIG_DIR, loadDemoSpec } from './demo-config.ts';
import { adminGet, natRules } from './demo-node-api.ts';
import type { WorkloadView } from './demo-node-api.ts';
import { ROLES, STEPS, type Demo, type StepResult } from './demo-steps.ts';

const CAPTURE_TIMEOUT_MS = 10_000;

const out = (line = '') => process.stdout.write(`${line}\n`);

/** What cli/demo.ts passes (it declares the same shape: it loads this module without the type checker). */
export interface DemoOptions {
  /** Tear down right after the report, printing the mesh's logs if a step failed. */
  once: boolean;
  /** Start of the network namespace names, lower-case letters only: the process id is appended. */
  prefix: string;
  /** Unless once: resolves when the user is done exploring. */
  untilDone(): Promise<void>;
}

/** Runs the demo; resolves, once everything is torn down, with whether every step behaved as expected. */
export async function runDemo(opts: DemoOptions): Promise<boolean> {
  // The report is for people; the harness's JSON info lines would only interleave with it.
  if (!process.env.NODEMESH_LOG_LEVEL) setLevel('warn');
  await sweepStale(opts.prefix);
  const spec = loadDemoSpec();
  const prefix = runPrefix(opts.prefix);
  out(`nodemesh demo: building ${spec.nodes} nodes in network namespaces ${prefix}-* from ${relative(process.cwd(), DEMO_CONFIG_DIR) || DEMO_CONFIG_DIR} …`);
  const cluster = await createCluster(spec, { prefix });
  try {
    const demo = await startDemo(cluster);
    const ok = await report(demo);
    if (opts.once) {
      // The logs go with the teardown: keep their tails for whoever has to find out why.
      if (!ok) process.stderr.write(`${await demo.mesh.logs()}\n`);
    } else {
      explore(demo);
      await opts.untilDone();
      out('\ntearing down: stopping processes, deleting namespaces …');
    }
    return ok;
  } finally {
    await cluster.teardown();
    const left = (await listNamespaces()).filter((ns) => belongsTo(ns, prefix));
    out(left.length === 0
      ? `demo torn down: no ${prefix}-* namespace or process left`
      : `demo torn down, but namespaces ${left.join(' ')} remain: remove them with "node integration/cluster-cli.ts down --prefix ${prefix}"`);
  }
}

async function startDemo(cluster: Cluster): Promise<Demo> {
  // The control plane reads a copy of examples/demo, so edits made while exploring stay out of the repository.
  const workDir = await mkdtemp(join(tmpdir(), `nodemesh-${cluster.prefix}-`));
  cluster.onTeardown(() => rm(workDir, { recursive: true, force: true }));
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

/** Waits until each node's nat table redirects the outbound traffic of every meshed pod it runs; returns those pods by node. */
async function waitForCapture(cluster: Cluster, mesh: Mesh): Promise<Map<string, WorkloadView[]>> {
  const meshed = new Map<string, WorkloadView[]>();
  for (const node of cluster.nodes) {
    const workloads = await adminGet<WorkloadView[]>(cluster, node.name, '/workloads');
    meshed.set(node.name, workloads);
    const deadline = Date.now() + CAPTURE_TIMEOUT_MS;
    for (;;) {
      const rules = await natRules(cluster, node.name);
      const missing = workloads.filter((w) => !rules.includes(`-s ${w.ip}/32 -p tcp -j NODEMESH-OUTBOUND`));
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
    out(`     ${result.evidence}`);
    for (const detail of result.details) out(detail.split('\n').map((l) => `       ${l}`).join('\n'));
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
