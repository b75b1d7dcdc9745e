// End-to-end data-plane workers (daemon/workers.ts) on a real two-node mesh,
// every node running `--workers 2`: new connections are spread over both
// workers of each node (the kernel's SO_REUSEPORT group, on the node and in
// each pod's namespace), each is served, and the node answers as one — the
// admin API lists every worker's connections, /metrics sums them, a policy
// change closes what it no longer allows in every worker. Tunnelled connections
// reach the destination node multiplexed on one HBONE session per source
// worker, so its spread is tested with plaintext clients (one TCP connection
// each) from a pod outside the mesh.
// Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { ClusterSpec, NamespaceSpec } from './cluster/plan.ts';
import { writeObject } from './cluster/config-dir.ts';
import type { KubeObject } from '../controlplane/source.ts';
import { openConnection, startServer } from './cluster/servers.ts';
import type { OpenConnection } from './cluster/servers.ts';
import { ADMIN_ADDR } from './cluster/mesh.ts';
import { adminGet, cniTitle, scrapeMetrics, startMeshFixture, type MeshFixture } from './e2e/mesh-fixture.ts';
import { startLoggedGreeter } from './e2e/pod-apps.ts';
import type { LoggedGreeter } from './e2e/pod-apps.ts';
import { sumOf } from './e2e/prometheus.ts';
import { waitUntil } from './e2e/wait-until.ts';

const CLI = fileURLToPath(new URL('../cli/nodemesh.ts', import.meta.url));
const TCP_PORT = 7000;
const HTTP_PORT = 8080;
/** Enough that all of them landing on one worker (2 * 2^-16) does not happen. */
const CONNECTIONS = 16;
const SHOP: NamespaceSpec = { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } };
const LEGACY: NamespaceSpec = { name: 'legacy' };
const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [SHOP, LEGACY],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'outsider', namespace: 'legacy', node: 'n1' },
    { name: 'server', namespace: 'shop', node: 'n2', labels: { app: 'server' }, serviceAccount: 'server' },
  ],
};

let fx: MeshFixture;
let greeter: LoggedGreeter;

before(async () => {
  fx = await startMeshFixture(SPEC, 'workers', undefined, { workers: 2 });
  greeter = await startLoggedGreeter(fx.cluster, 'shop/server', TCP_PORT);
  await startServer(fx.cluster, 'shop/server', 'http', HTTP_PORT);
});
after(() => fx?.teardown());

const serverIp = () => fx.cluster.pod('shop/server').ip;

async function holdConnections(t: { after(fn: () => Promise<unknown>): void }, from = 'shop/client'): Promise<OpenConnection[]> {
  const held: OpenConnection[] = [];
  t.after(() => Promise.all(held.map((c) => c.close())));
  for (let i = 0; i < CONNECTIONS; i++) {
    const open = await openConnection(fx.cluster, fx.cluster.pod(from).netns, serverIp(), TCP_PORT);
    held.push(open);
    await open.roundTrip(`held ${i}`);
  }
  return held;
}

/** Which workers of a node hold its open connections to the server's port. */
async function workersHolding(node: string): Promise<Map<number, number>> {
  const connections = await adminGet<{ worker?: number; destination?: { port?: number } }[]>(fx.cluster, node, '/connections');
  const byWorker = new Map<number, number>();
  for (const c of connections) {
    assert.equal(typeof c.worker, 'number', `a connection of ${node} names no worker: ${JSON.stringify(c)}`);
    byWorker.set(c.worker!, (byWorker.get(c.worker!) ?? 0) + 1);
  }
  return byWorker;
}

const total = (byWorker: Map<number, number>) => [...byWorker.values()].reduce((a, b) => a + b, 0);

test(cniTitle('two workers per node: new connections are spread over both workers, each is answered, and /metrics counts each once'), async (t) => {
  const opened = async (node: string, reporter: string) => sumOf(await scrapeMetrics(fx.cluster, node), 'nodemesh_tcp_connections_opened_total', { reporter });
  const before = { n1: await opened('n1', 'source'), n2: await opened('n2', 'destination') };
  const acceptedBefore = greeter.accepted();
  await holdConnections(t);
  assert.equal(greeter.accepted() - acceptedBefore, CONNECTIONS);
  const onN1 = await workersHolding('n1');
  assert.deepEqual([...onN1.keys()].sort(), [0, 1], `n1's ${CONNECTIONS} connections are all on one worker: ${JSON.stringify([...onN1])}`);
  assert.equal(total(onN1), CONNECTIONS, 'n1 lists every connection once');
  assert.equal(total(await workersHolding('n2')), CONNECTIONS, 'n2 lists every connection once');
  assert.equal(await opened('n1', 'source') - before.n1, CONNECTIONS, 'n1 /metrics sums its workers');
  assert.equal(await opened('n2', 'destination') - before.n2, CONNECTIONS, 'n2 /metrics sums its workers');
});

test(cniTitle('two workers per node: HTTP requests on new connections are all answered and counted once in the node\'s request metrics'), async () => {
  const requests = async () => sumOf(await scrapeMetrics(fx.cluster, 'n1'), 'nodemesh_requests_total', { reporter: 'source', response_code: '200' });
  const before = await requests();
  const client = fx.cluster.pod('shop/client');
  for (let i = 0; i < CONNECTIONS; i++) {
    const res = await fx.cluster.exec(client.netns, ['curl', '-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${serverIp()}:${HTTP_PORT}/item/${i}`]);
    assert.equal(res.stdout, '200', `request ${i}`);
  }
  await waitUntil('n1 to count every request', async () => (await requests()) - before === CONNECTIONS, 3000);
});

test(cniTitle('two workers per node: a DENY policy closes the open connections of both workers'), async (t) => {
  const plaintext = await holdConnections(t, 'legacy/outsider');
  const tunnelled = await holdConnections(t);
  const onN2 = await workersHolding('n2');
  assert.deepEqual([...onN2.keys()].sort(), [0, 1], `n2's plaintext connections are all on one worker: ${JSON.stringify([...onN2])}`);
  const policy: KubeObject = {
    apiVersion: 'security.nodemesh.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-clients', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'server' } },
      action: 'DENY',
      rules: [
        { from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] },
        { from: [{ source: { ipBlocks: [`${fx.cluster.pod('legacy/outsider').ip}/32`] } }] },
      ],
    },
  };
  const file = await writeObject(fx.configDir, policy);
  t.after(() => rm(file, { force: true }));
  await waitUntil('every held connection to be closed', () => [...plaintext, ...tunnelled].every((c) => c.process.exitStatus !== undefined), 5000);
  assert.equal(total(await workersHolding('n2')), 0, 'n2 holds no connection of a denied client in any worker');
});

test(cniTitle('two workers per node: /tap shows the opens of both workers, and POST /logging turns a tracer on in every worker'), async (t) => {
  const netns = fx.cluster.node('n1').netns;
  const tap = fx.cluster.spawn(netns, [process.execPath, CLI, 'tap', '--admin', ADMIN_ADDR, '-o', 'json', '--event', 'open', '--duration', '60']);
  t.after(() => tap.stop());
  const opens = () => tap.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string; reporter?: string }).filter((e) => e.event === 'open' && e.reporter === 'source').length;
  // The tap subscribes asynchronously: probe until it sees a connection, then count from there.
  await waitUntil('the tap to be subscribed', async () => {
    const probe = await openConnection(fx.cluster, fx.cluster.pod('shop/client').netns, serverIp(), TCP_PORT);
    await probe.close();
    return opens() > 0;
  });
  const seen = opens();
  await holdConnections(t);
  assert.equal((await workersHolding('n1')).size, 2);
  // At least: the last probe's open may arrive after `seen` was taken. Both workers hold some, so neither alone makes 16.
  await waitUntil('the tap to see every open', () => opens() - seen >= CONNECTIONS, 5000);

  await fx.cluster.exec(netns, ['curl', '-sS', '--fail', '-X', 'POST', `http://${ADMIN_ADDR}/logging?tracers=outbound`]);
  t.after(() => fx.cluster.exec(netns, ['curl', '-sS', '-X', 'POST', `http://${ADMIN_ADDR}/logging?tracers=`]));
  const traced = async () => (await readFile(fx.mesh.logFile('node-n1'), 'utf8')).split('\n').filter((l) => l.includes('"scope":"outbound"') && l.includes('"level":"debug"'));
  await waitUntil('both workers to trace outbound connections', async () => {
    const probe = await openConnection(fx.cluster, fx.cluster.pod('shop/client').netns, serverIp(), TCP_PORT);
    await probe.close();
    // The main thread's lines (worker 0, beside the agent) name no worker; the thread's say `worker: 1`.
    const workers = new Set((await traced()).map((l) => (JSON.parse(l) as { worker?: number }).worker ?? 0));
    return workers.has(0) && workers.has(1);
  });
});
