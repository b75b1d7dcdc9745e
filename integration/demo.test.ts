// `nodemesh demo` as a user runs it: the real executable in a child process,
// building the examples/demo cluster in network namespaces. Needs root; fails
// (never skips) when it cannot set the cluster up.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidObjectError } from '../core/errors.ts';
import { deletePrefix, listNamespaces, run } from './cluster/netns.ts';
import { loadDemoSpec } from './demo-config.ts';

const CLI = fileURLToPath(new URL('../cli/nodemesh.ts', import.meta.url));
const BASE = 'nmdt';

interface Demo {
  child: ChildProcess;
  prefix: string;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts the demo; whatever happens, the test ends with the child gone and its
 * namespaces deleted. With `closeAfterLines` the test reads stdout like
 * `head -n`: it keeps that many lines, then closes its end of the pipe.
 */
function startDemo(t: TestContext, args: string[], opts: { closeAfterLines?: number } = {}): Demo {
  const child = spawn(process.execPath, [CLI, 'demo', '--prefix', BASE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => {
    stdout += b.toString();
    const keep = opts.closeAfterLines;
    if (keep === undefined || stdout.split('\n').length <= keep) return;
    stdout = stdout.split('\n').slice(0, keep).join('\n') + '\n';
    child.stdout!.destroy();
  });
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const prefix = `${BASE}${child.pid}`;
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await deletePrefix(prefix);
  });
  return { child, prefix, stdout: () => stdout, stderr: () => stderr, exited };
}

async function namespacesOf(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((ns) => ns.startsWith(`${prefix}-`));
}

async function pidsIn(namespaces: string[]): Promise<number[]> {
  const pids = await Promise.all(namespaces.map((ns) => run(['ip', 'netns', 'pids', ns])));
  return pids.join(' ').split(/\s+/).filter(Boolean).map(Number);
}

/** The demo's work directories, `<tmpdir>/nodemesh-<run prefix>-XXXXXX`. */
function workDirsOf(prefix: string): string[] {
  return readdirSync(tmpdir()).filter((f) => f.startsWith(`nodemesh-${prefix}-`)).map((f) => join(tmpdir(), f));
}

/** A regular expression for `text` as the report prints it: wrapped, so any space may be a line break and indentation. */
function wrapped(text: string): RegExp {
  return new RegExp(text.split(' ').map((word) => word.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('\\s+'));
}

/** The lines of step `n` after its title, up to the blank line that ends it. */
function stepBlock(out: string, n: number): string {
  return new RegExp(`^. ${n}\\. .*\\n([\\s\\S]*?)\\n\\n`, 'm').exec(out)?.[1] ?? '';
}

interface ReportedSample {
  name: string;
  value: number;
  labels: Record<string, string>;
}

/**
 * Step 4's metrics read back into samples: the labels on every series, the
 * series (A, B, …) with their own labels, then a row per metric with its value
 * in each series.
 */
function reportedSamples(out: string): ReportedSample[] {
  // A line that goes on with labels continues the line before it.
  const lines = stepBlock(out, 4).replace(/\n {9}(?=[a-z_]+=")/g, ' ').split('\n');
  const labelsIn = (text: string) => Object.fromEntries([...text.matchAll(/([a-z_]+)=("(?:[^"\\]|\\.)*")/g)].map(([, k, v]) => [k!, JSON.parse(v!) as string]));
  const common = labelsIn(lines.find((l) => /^ {7}\S+ \/metrics, on every series:/.test(l)) ?? '');
  const series = new Map(lines.flatMap((l) => {
    const m = /^ {7}series ([A-Z]+): (.*)$/.exec(l);
    return m ? [[m[1]!, { ...common, ...labelsIn(m[2]!) }] as const] : [];
  }));
  const columns = (lines.find((l) => /^ {8,}[A-Z]+( +[A-Z]+)*$/.test(l)) ?? '').trim().split(/ +/);
  assert.deepEqual(columns, [...series.keys()], 'the table has a column per series');
  return lines.flatMap((l) => {
    const m = /^ {7}(nodemesh_\w+) +(.*)$/.exec(l);
    if (!m) return [];
    return m[2]!.trim().split(/ +/).flatMap((cell, i) => (cell === '-' ? [] : [{ name: m[1]!, value: Number(cell), labels: series.get(columns[i]!)! }]));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, demo: Demo, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (demo.child.exitCode !== null) assert.fail(`demo exited (${demo.child.exitCode}) before ${what}\n--- stdout ---\n${demo.stdout()}\n--- stderr ---\n${demo.stderr()}`);
    if (Date.now() > deadline) assert.fail(`demo did not get to ${what} within ${timeoutMs} ms\n--- stdout ---\n${demo.stdout()}\n--- stderr ---\n${demo.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the demo cluster spec comes from examples/demo: nodes, pod IPs, service accounts, ports and VIPs as the YAML says', () => {
  const spec = loadDemoSpec();
  assert.equal(spec.nodes, 2);
  const pods = new Map(spec.pods!.map((p) => [`${p.namespace}/${p.name}`, p]));
  assert.deepEqual([...pods.keys()].sort(), ['demo/client', 'demo/server-a', 'demo/server-b', 'legacy/outsider']);
  assert.deepEqual([pods.get('demo/client')!.node, pods.get('demo/client')!.ip, pods.get('demo/client')!.serviceAccount], ['node-1', '10.244.1.10', 'client']);
  assert.deepEqual([pods.get('demo/server-b')!.node, pods.get('demo/server-b')!.ip, pods.get('demo/server-b')!.labels], ['node-2', '10.244.2.11', { app: 'server', version: 'b' }]);
  assert.deepEqual(pods.get('demo/server-a')!.ports, [{ name: 'tcp-echo', port: 7000 }, { name: 'admin', port: 7001 }, { name: 'http', port: 8080 }]);
  assert.equal(pods.get('legacy/outsider')!.serviceAccount, undefined);
  const server = spec.services!.find((s) => s.name === 'server')!;
  assert.equal(server.clusterIP, '10.96.0.10');
  assert.deepEqual(server.ports.map((p) => [p.port, p.targetPort, p.appProtocol]), [[80, 7000, undefined], [8080, 8080, 'http']]);
  assert.deepEqual(spec.namespaces!.find((n) => n.name === 'demo')!.annotations, { 'nodemesh.io/mesh': 'enabled' });
});

test('a demo pod whose IP is outside its node\'s pod CIDR is rejected, naming the pod and field', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-demo-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'pods.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {nodeName: worker-1}\nstatus: {podIP: 10.244.2.5}\n');
  assert.throws(() => loadDemoSpec(dir), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError);
    assert.match(err.object, /shop\/web/);
    assert.equal(err.field, 'ip');
    assert.match(err.message, /10\.244\.2\.5 is outside node worker-1's pod CIDR 10\.244\.1\.0\/24/);
    return true;
  });
});

// `make demo` builds the routed (Calico-like) profile; the bridge one is the other shape users run.
for (const cni of ['routed', 'bridge']) {
test(`[cni=${cni}] nodemesh demo --once: every step passes, the report shows identities, mTLS, the denial and the metrics, and nothing is left`, { timeout: 180_000 }, async (t) => {
  const demo = startDemo(t, cni === 'routed' ? ['--once'] : ['--once', '--cni', cni]);
  const { code } = await demo.exited;
  const out = demo.stdout();
  assert.equal(code, 0, `demo --once failed\n--- stdout ---\n${out}\n--- stderr ---\n${demo.stderr()}`);

  for (const step of [1, 2, 3, 4]) assert.match(out, new RegExp(`^✔ ${step}\\. `, 'm'), `step ${step} passed`);
  assert.doesNotMatch(out, /✘/);
  assert.match(out, /All 4 steps behaved as expected\./);
  // 1: both replicas reached through the VIP, with both identities, over mTLS.
  for (const server of ['demo/server-a 10.244.2.10:7000', 'demo/server-b 10.244.2.11:7000']) {
    assert.match(out, new RegExp(`→ ${server} \\[node-2\\] spiffe://cluster\\.local/ns/demo/sa/server\\s+mutual_tls, HBONE`));
  }
  assert.match(out, /demo\/client \[node-1\] spiffe:\/\/cluster\.local\/ns\/demo\/sa\/client\n\s+→ demo\/server 10\.96\.0\.10:80/);
  assert.match(out, wrapped('node-2 /metrics: nodemesh_tcp_connections_opened_total = 2 for reporter="destination" source_principal="spiffe://cluster.local/ns/demo/sa/client" connection_security_policy="mutual_tls"'));
  // 2: each node holds its own pods' identity only.
  assert.match(out, wrapped('node-1: spiffe://cluster.local/ns/demo/sa/client; node-2: spiffe://cluster.local/ns/demo/sa/server; every node trusts the one root'));
  // 3: the refusal, decided by the demo's policy, and the allowed connections.
  assert.match(out, wrapped('node-2 log: inbound plaintext connection refused: denied by DENY policy demo/deny-legacy-admin (source 10.244.1.20, destination 10.244.2.10:7001)'));
  assert.match(out, /✔ legacy\/outsider \(plaintext, no identity\) → demo\/server-a:7001 {2}refused/);
  assert.match(out, /✔ demo\/client \(mTLS\) → demo\/server-a:7001 {2}allowed: "hello from demo\/server-a"/);
  assert.match(out, /✔ legacy\/outsider \(plaintext\) → demo\/server-a:7000 {2}allowed/);
  // 4: node-2's own metrics, read back from the table into samples.
  const reported = reportedSamples(out);
  const has = (name: string, labels: Record<string, string>, value: (v: number) => boolean) =>
    reported.some((r) => r.name === name && Object.entries(labels).every(([k, v]) => r.labels[k] === v) && value(r.value));
  assert.ok(has('nodemesh_tcp_connections_denied_total', { reporter: 'destination', reason: 'policy' }, (v) => v === 1), JSON.stringify(reported));
  assert.ok(has('nodemesh_tcp_sent_bytes_total', { reporter: 'destination', connection_security_policy: 'mutual_tls' }, (v) => v > 0), JSON.stringify(reported));
  // The evidence and the metrics fit in 100 columns.
  for (const line of [...out.split('\n').filter((l) => /^ {5}\S/.test(l)), ...stepBlock(out, 4).split('\n')]) {
    assert.ok(line.length <= 100, `${line.length} columns: ${line}`);
  }

  assert.match(out, new RegExp(`demo torn down: no ${demo.prefix}-\\* namespace`));
  assert.deepEqual(await namespacesOf(demo.prefix), []);
});
}

test('nodemesh demo: stays up for exploring, and Ctrl-C (SIGINT) tears down every namespace, process and work directory', { timeout: 180_000 }, async (t) => {
  const demo = startDemo(t, []);
  await waitFor('"Press Ctrl-C"', demo, () => demo.stdout().includes('Press Ctrl-C'), 120_000);
  const out = demo.stdout();
  assert.match(out, /All 4 steps behaved as expected\./);
  assert.match(out, new RegExp(`ip netns exec ${demo.prefix}-n1 curl -s 127\\.0\\.0\\.1:15000/connections`));
  const workDir = /everything the demo wrote: (\S+)/.exec(out)?.[1];
  assert.ok(workDir && existsSync(workDir), `the report names an existing work directory: ${workDir}`);

  const namespaces = await namespacesOf(demo.prefix);
  assert.ok(namespaces.includes(`${demo.prefix}-n1`) && namespaces.includes(`${demo.prefix}-n1-pod-demo-client`), `cluster is up: ${namespaces.join(', ')}`);
  const pids = await pidsIn(namespaces);
  assert.ok(pids.length >= 5, `control plane, two nodes and servers run in the cluster: ${pids.join(' ')}`);

  demo.child.kill('SIGINT');
  const { code } = await demo.exited;
  assert.equal(code, 130, `exit status after Ctrl-C\n${demo.stdout().slice(out.length)}\n${demo.stderr()}`);
  assert.deepEqual(await namespacesOf(demo.prefix), []);
  assert.deepEqual(pids.filter(alive), [], 'no process of the demo outlives it');
  assert.equal(existsSync(workDir), false, 'the work directory is removed');
});

test('nodemesh demo | head -5: the demo runs on without its output, and Ctrl-C still tears down every namespace, process and work directory', { timeout: 180_000 }, async (t) => {
  const demo = startDemo(t, [], { closeAfterLines: 5 });
  // The fifth line (the cluster's last node) comes once the cluster is up and the servers run.
  await waitFor('its fifth line', demo, () => demo.child.stdout!.destroyed, 120_000);
  assert.match(demo.stdout(), /^nodemesh demo: building 2 nodes[^\n]*\n {2}control plane [^\n]*\n {2}node node-1 [^\n]*\n {2}node node-2 [^\n]*\n {2}service /);
  const namespaces = await namespacesOf(demo.prefix);
  assert.ok(namespaces.includes(`${demo.prefix}-n1`) && namespaces.some((ns) => ns.endsWith('-pod-demo-client')), `cluster is up: ${namespaces.join(', ')}`);
  const pids = await pidsIn(namespaces);
  assert.ok(pids.length >= 5, `control plane, two nodes and servers run in the cluster: ${pids.join(' ')}`);
  const workDirs = workDirsOf(demo.prefix);
  assert.equal(workDirs.length, 1, `one work directory: ${workDirs.join(', ')}`);

  // The steps and the explore hints now write to the closed pipe; the demo must stay up through it.
  await new Promise((r) => setTimeout(r, 10_000));
  assert.equal(demo.child.exitCode, null, `the demo is still up after its output closed\n--- stderr ---\n${demo.stderr()}`);

  demo.child.kill('SIGINT');
  const { code } = await demo.exited;
  assert.equal(code, 130, `exit status after Ctrl-C\n--- stderr ---\n${demo.stderr()}`);
  assert.doesNotMatch(demo.stderr(), /EPIPE|teardown did not finish/);
  assert.deepEqual(await namespacesOf(demo.prefix), []);
  assert.deepEqual(pids.filter(alive), [], 'no process of the demo outlives it');
  assert.deepEqual(workDirsOf(demo.prefix), [], 'the work directory is removed');
});

test('nodemesh demo --cleanup removes the namespaces and work directories of runs that are gone, and keeps those of a live run', async (t) => {
  const base = 'nmdtclean';
  // A pid that no process has any more: that of a child that has exited.
  const gone = spawn('true');
  await new Promise((r) => gone.on('close', r));
  const [stale, live] = [`${base}${gone.pid}`, `${base}${process.pid}`];
  t.after(async () => {
    await deletePrefix(stale);
    await deletePrefix(live);
    for (const dir of [...workDirsOf(stale), ...workDirsOf(live)]) rmSync(dir, { recursive: true, force: true });
  });
  for (const ns of [`${stale}-n1`, `${stale}-pod-demo-client`, `${live}-n1`]) await run(['ip', 'netns', 'add', ns]);
  const staleDir = join(tmpdir(), `nodemesh-${stale}-AbC123`);
  const liveDir = join(tmpdir(), `nodemesh-${live}-XyZ789`);
  for (const dir of [staleDir, liveDir]) mkdirSync(join(dir, 'mesh'), { recursive: true });

  const child = spawn(process.execPath, [CLI, 'demo', '--cleanup', '--prefix', base], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  assert.equal(code, 0, stdout);
  assert.deepEqual(stdout.split('\n').filter(Boolean).sort(), [
    `removed directory ${staleDir}`,
    `removed namespace ${stale}-n1`,
    `removed namespace ${stale}-pod-demo-client`,
  ]);
  assert.deepEqual(await namespacesOf(stale), []);
  assert.equal(existsSync(staleDir), false);
  assert.deepEqual(await namespacesOf(live), [`${live}-n1`], 'a live run keeps its namespaces');
  assert.ok(existsSync(liveDir), 'and its work directory');
});
