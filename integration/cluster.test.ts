// The network-namespace test cluster: real namespaces, veths, routes and nat rules.
// Needs root; fails (never skips) when namespaces cannot be created.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import { deletePrefix, listNamespaces, runPrefix, sweepStale } from './cluster/netns.ts';
import { startServer, tcpRequest } from './cluster/servers.ts';
import { cgroup2Mount } from '../daemon/cpu-pressure.ts';

const BASE = 'nmc';
const CLUSTER_MODULE = new URL('./cluster/cluster.ts', import.meta.url).href;
const SERVERS_MODULE = new URL('./cluster/servers.ts', import.meta.url).href;
const CLI = fileURLToPath(new URL('./cluster-cli.ts', import.meta.url));

async function namespacesOf(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((ns) => ns.startsWith(`${prefix}-`));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('two nodes: pod-to-pod across nodes and on one node, a ClusterIP via DNAT, and teardown removes every namespace and process', async (t) => {
  await sweepStale(BASE);
  const prefix = runPrefix(BASE, 'a');
  let cluster: Cluster | undefined;
  t.after(() => cluster?.teardown());
  cluster = await createCluster({
    nodes: 2,
    pods: [
      { name: 'client', node: 'n1' },
      { name: 'near', node: 'n1' },
      { name: 'far', node: 'n2' },
      { name: 'web-1', node: 'n1', labels: { app: 'web' } },
      { name: 'web-2', node: 'n2', labels: { app: 'web' } },
    ],
    services: [{ name: 'web', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 7001 }] }],
  }, { prefix });

  assert.deepEqual((await namespacesOf(prefix)).sort(), [
    `${prefix}-cp`, `${prefix}-n1`, `${prefix}-n1-pod-default-client`, `${prefix}-n1-pod-default-near`,
    `${prefix}-n1-pod-default-web-1`, `${prefix}-n2`, `${prefix}-n2-pod-default-far`, `${prefix}-n2-pod-default-web-2`, `${prefix}-ul`,
  ]);
  const servers = [
    await startServer(cluster, 'near', 'echo', 7000),
    await startServer(cluster, 'far', 'echo', 7000),
    await startServer(cluster, 'web-1', 'greeter', 7001),
    await startServer(cluster, 'web-2', 'greeter', 7001),
  ];
  const client = cluster.pod('client');

  assert.equal(await tcpRequest(cluster, client.netns, cluster.pod('near').ip, 7000, 'same node'), 'same node');
  assert.equal(await tcpRequest(cluster, client.netns, cluster.pod('far').ip, 7000, 'across nodes'), 'across nodes');
  // The echo server sees the pod's own address: routed, not masqueraded.
  const http = await startServer(cluster, 'far', 'http', 8080);
  const seen = JSON.parse((await cluster.exec(client.netns, ['curl', '-sS', '--max-time', '5', `http://${cluster.pod('far').ip}:8080/x`])).stdout);
  assert.equal(seen.pod, 'far');
  assert.equal(seen.path, '/x');
  assert.equal(seen.remoteAddress, client.ip);

  // kube-proxy-style VIP: random DNAT spreads connections over both endpoints.
  const vip = cluster.service('web').clusterIP;
  const answers = new Set<string>();
  for (let i = 0; i < 24 && answers.size < 2; i++) answers.add(await tcpRequest(cluster, client.netns, vip, 80));
  assert.deepEqual([...answers].sort(), ['hello from web-1\n', 'hello from web-2\n']);
  // The node itself reaches the VIP too (OUTPUT jump).
  assert.match(await tcpRequest(cluster, cluster.node('n2').netns, vip, 80), /^hello from web-[12]\n$/);

  // Nothing routes to the machine's own namespace: a pod cannot reach an address outside the cluster.
  const escape = await cluster.exec(client.netns, ['curl', '-sS', '--max-time', '2', 'http://192.0.2.1/'], { allowFailure: true });
  assert.notEqual(escape.code, 0);

  await cluster.teardown();
  await cluster.teardown();
  assert.deepEqual(await namespacesOf(prefix), []);
  for (const s of [...servers, http]) await eventually(`server ${s.pid} to be gone`, () => !isAlive(s.pid));
});

test('a node\'s daemon runs in a cgroup of its own, sees its CPU pressure inside its namespace, and teardown removes the cgroup', async (t) => {
  await sweepStale(BASE);
  const prefix = runPrefix(BASE, 'g');
  let cluster: Cluster | undefined;
  t.after(() => cluster?.teardown());
  cluster = await createCluster({ nodes: 1, pods: [] }, { prefix });
  const cgroup = join(cgroup2Mount()!, `${prefix}-n1`);
  // What daemon/cpu-pressure.ts reads: its cgroup from /proc/self/cgroup, under the cgroup2 mount it sees.
  const daemon = cluster.spawnNode(cluster.node('n1').netns, 'n1', ['sh', '-c', `grep -qx '0::/${prefix}-n1' /proc/self/cgroup && grep -q '^some .*total=' /sys/fs/cgroup/${prefix}-n1/cpu.pressure && exec sleep 60`]);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(daemon.exitStatus, undefined, 'the checks inside the node namespace failed');
  assert.deepEqual(readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim().split('\n'), [String(daemon.pid)]);
  await cluster.teardown();
  assert.equal(existsSync(cgroup), false);
});

test('pods added and removed later get wired and join or leave Service endpoints', async (t) => {
  const prefix = runPrefix(BASE, 'b');
  const cluster = await createCluster({ nodes: 2, pods: [{ name: 'client', node: 'n1' }] }, { prefix });
  t.after(() => cluster.teardown());
  const svc = await cluster.addService({ name: 'late', selector: { app: 'late' }, ports: [{ port: 81, targetPort: 7000 }] });
  const late = await cluster.addPod({ name: 'late', node: 'n2' });
  assert.equal(late.ip, '10.244.2.10');
  await startServer(cluster, 'late', 'greeter', 7000);
  assert.equal(await tcpRequest(cluster, cluster.pod('client').netns, svc.clusterIP, 81), 'hello from late\n');
  await cluster.removePod('late');
  assert.equal((await namespacesOf(prefix)).includes(late.netns), false);
  const gone = await cluster.exec(cluster.pod('client').netns, ['curl', '-sS', '--max-time', '2', `http://${svc.clusterIP}:81/`], { allowFailure: true });
  assert.notEqual(gone.code, 0);
});

test('a failure while building tears down what was built', async () => {
  const prefix = runPrefix(BASE, 'c');
  await assert.rejects(
    createCluster({ nodes: 1, pods: [{ name: 'ok', node: 'n1' }, { name: 'bad', node: 'n1', ip: '10.244.1.300' }] }, { prefix }),
    (err: Error & { code?: string }) => err.code === 'NM_CLUSTER_SETUP' && /10\.244\.1\.300/.test(err.message),
  );
  assert.deepEqual(await namespacesOf(prefix), []);
});

/**
 * Runs a child Node process that builds a cluster, starts a server and prints
 * {prefix, serverPid}; `then` decides how it ends. Whatever the test asserts, the
 * child and its namespaces are gone afterwards.
 */
function childWithCluster(t: TestContext, then: 'throw' | 'wait'): { child: ReturnType<typeof spawn>; ready: Promise<{ prefix: string; serverPid: number }>; exited: Promise<number | null> } {
  const code = `
    import { createCluster } from ${JSON.stringify(CLUSTER_MODULE)};
    import { startServer } from ${JSON.stringify(SERVERS_MODULE)};
    const prefix = ${JSON.stringify(BASE)} + process.pid;
    const cluster = await createCluster({ nodes: 1, pods: [{ name: 'p', node: 'n1' }] }, { prefix });
    const server = await startServer(cluster, 'p', 'echo', 7000);
    console.log(JSON.stringify({ prefix, serverPid: server.pid }));
    ${then === 'throw' ? "setTimeout(() => { throw new Error('deliberate failure in a test'); }, 50);" : 'setInterval(() => {}, 1000);'}
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (b) => (err += b));
  const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  const ready = new Promise<{ prefix: string; serverPid: number }>((resolve, reject) => {
    child.stdout!.on('data', (b) => {
      out += b;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
    });
    void exited.then((c) => reject(new Error(`cluster child exited (${c}) before it was ready:\n${err}`)));
  });
  t.after(async () => {
    child.kill('SIGKILL');
    const started = await ready.catch(() => undefined);
    if (started) await deletePrefix(started.prefix);
  });
  return { child, ready, exited };
}

test('an uncaught error in the process that owns a cluster still tears it down (exit hook)', async (t) => {
  const { ready, exited } = childWithCluster(t, 'throw');
  const { prefix, serverPid } = await ready;
  assert.notEqual(await exited, 0);
  assert.deepEqual(await namespacesOf(prefix), []);
  await eventually('the child cluster\'s server to be gone', () => !isAlive(serverPid));
});

test('SIGTERM to the process that owns a cluster tears it down', async (t) => {
  const { child, ready, exited } = childWithCluster(t, 'wait');
  const { prefix, serverPid } = await ready;
  child.kill('SIGTERM');
  assert.equal(await exited, 143);
  assert.deepEqual(await namespacesOf(prefix), []);
  await eventually('the child cluster\'s server to be gone', () => !isAlive(serverPid));
});

test('sweepStale deletes the namespaces and processes of a run that was killed outright', async (t) => {
  const { child, ready, exited } = childWithCluster(t, 'wait');
  const { prefix, serverPid } = await ready;
  child.kill('SIGKILL');
  await exited;
  assert.ok((await namespacesOf(prefix)).length > 0, 'SIGKILL leaves the namespaces behind');
  const swept = await sweepStale(BASE);
  assert.ok(swept.includes(`${prefix}-n1`), `swept ${swept.join(', ')}`);
  assert.deepEqual(await namespacesOf(prefix), []);
  await eventually('the killed run\'s server to be gone', () => !isAlive(serverPid));
});

test('cluster-cli: up leaves a cluster running after it exits, status lists it, down removes it', async (t) => {
  const prefix = runPrefix(BASE, 'cli');
  t.after(() => deletePrefix(prefix));
  const cli = (...args: string[]) => promisify(execFile)(process.execPath, [CLI, ...args, '--prefix', prefix]);
  const up = await cli('up');
  assert.match(up.stdout, new RegExp(`${prefix}-n1-pod-default-client +eth0 10\\.244\\.1\\.10/24`));
  assert.match(up.stdout, /service default\/server 10\.96\.0\.10 ports 80->8080/);
  assert.equal((await namespacesOf(prefix)).length, 7);
  assert.match((await cli('status')).stdout, new RegExp(`${prefix}-n2 +eth0 172\\.30\\.0\\.12/24`));
  assert.match((await cli('down')).stdout, /^deleted /);
  assert.deepEqual(await namespacesOf(prefix), []);
  assert.match((await cli('status')).stdout, /no namespaces with prefix/);
});
