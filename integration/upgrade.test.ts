// Restarts and upgrades that never refuse a connection, on the namespace
// cluster: both nodes' daemons replaced in turn (a successor started beside the
// old one, the old one SIGTERMed) under keep-alive HTTP, new connections at a
// steady rate and a long-lived TCP connection; a daemon killed outright and
// restarted; and a daemon restarted while the control plane is down. Needs root;
// fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClusterSpec } from './cluster/plan.ts';
import type { ClusterProcess } from './cluster/processes.ts';
import { startServer } from './cluster/servers.ts';
import { cniTitle, startMeshFixture, type MeshFixture } from './e2e/mesh-fixture.ts';
import { attempt, startLoggedGreeter } from './e2e/pod-apps.ts';
import { startCapture, tcpPackets } from './e2e/pcap.ts';

const LOAD = fileURLToPath(new URL('./e2e/upgrade-load.ts', import.meta.url));
const SLOW_STREAM = fileURLToPath(new URL('./e2e/slow-stream.ts', import.meta.url));
const STREAM_REPLIES = 20;
/** The server stream's gRPC deadline: a stream stalled by the upgrade ends with DEADLINE_EXCEEDED and its replies so far. */
const STREAM_DEADLINE_MS = 30_000;
const DRAIN_DEADLINE_MS = 3000;

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'web', namespace: 'shop', node: 'n2', serviceAccount: 'web', labels: { app: 'web' } },
    { name: 'echo', namespace: 'shop', node: 'n2', serviceAccount: 'echo', labels: { app: 'echo' } },
    { name: 'stream', namespace: 'shop', node: 'n2', serviceAccount: 'stream', labels: { app: 'stream' } },
  ],
  services: [
    { name: 'web', namespace: 'shop', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
    { name: 'echo', namespace: 'shop', selector: { app: 'echo' }, ports: [{ name: 'tcp', port: 7000, appProtocol: 'tcp' }] },
    { name: 'stream', namespace: 'shop', selector: { app: 'stream' }, ports: [{ name: 'grpc', port: 9000, appProtocol: 'grpc' }] },
  ],
};

let fx: MeshFixture;
before(async () => {
  fx = await startMeshFixture(SPEC, 'upgrade', undefined, { nodeArgs: ['--drain-deadline-ms', String(DRAIN_DEADLINE_MS)] });
  await startServer(fx.cluster, 'shop/web', 'http', 8080, 'web');
  await startLoggedGreeter(fx.cluster, 'shop/echo', 7000);
  const stream = fx.cluster.spawn(fx.cluster.pod('shop/stream').netns, [process.execPath, SLOW_STREAM, 'serve', '9000']);
  await stream.waitForOutput('listening');
});
after(() => fx?.teardown());

interface LoadSummary {
  requests: number;
  failedRequests: number;
  connections: number;
  failedConnections: number;
  errors: string[];
  longLived: { echoes: number; ended: string | null };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test(cniTitle('a rolling upgrade of both nodes\' daemons fails no HTTP request and refuses no new connection; the long-lived TCP connection runs to the drain deadline and its close is logged'), { timeout: 120_000 }, async (t) => {
  const web = fx.cluster.service('shop/web').clusterIP;
  const echo = fx.cluster.service('shop/echo').clusterIP;
  const load: ClusterProcess = fx.cluster.spawn(fx.cluster.pod('shop/client').netns, [process.execPath, LOAD, `${web}:80`, `${echo}:7000`]);
  t.after(() => load.stop());
  await load.waitForOutput('running', 15_000);
  // A server stream running while n1's daemon is replaced: it must complete (or be moved by GOAWAY).
  const stream = fx.cluster.spawn(fx.cluster.pod('shop/client').netns, [process.execPath, SLOW_STREAM, 'call', `${fx.cluster.service('shop/stream').clusterIP}:9000`, String(STREAM_REPLIES), '100', String(STREAM_DEADLINE_MS)]);
  t.after(() => stream.stop());
  await sleep(500);
  const replaced: ClusterProcess[] = [];
  for (const node of ['n1', 'n2']) {
    const { old } = await fx.mesh.startSuccessor(node);
    await sleep(300);
    old.signal('SIGTERM');
    // Bounded waits, so a hang names what hung (once the routed pass ran into the test's own timeout).
    const exit = await old.waitForExit(DRAIN_DEADLINE_MS + 10_000);
    assert.equal(exit.code, 0, `the old daemon of ${node} stopped cleanly`);
    replaced.push(old);
    await sleep(300);
  }
  await sleep(500);
  await stream.waitForExit(STREAM_DEADLINE_MS + 5_000);
  const streamed = JSON.parse(stream.stdout.trim()) as { code: number; details: string; replies: number };
  t.diagnostic(`gRPC server stream through the upgrade: status ${streamed.code}, ${streamed.replies} of ${STREAM_REPLIES} replies`);
  assert.deepEqual(streamed, { code: 0, details: 'OK', replies: STREAM_REPLIES }, 'the gRPC stream completed');
  load.signal('SIGTERM');
  await load.waitForExit(10_000);
  const summary = JSON.parse(load.stdout.trim().split('\n').at(-1)!) as LoadSummary;
  t.diagnostic(`upgrade: ${summary.requests} requests, ${summary.failedRequests} failed; ${summary.connections} new connections, ${summary.failedConnections} refused; long-lived: ${summary.longLived.echoes} echoes, ${summary.longLived.ended ?? 'open'}`);
  assert.deepEqual(summary.errors, [], 'errors the client saw');
  assert.equal(summary.failedRequests, 0);
  assert.equal(summary.failedConnections, 0);
  assert.ok(summary.requests > 100 && summary.connections > 50, `the load ran: ${JSON.stringify(summary)}`);
  // The long-lived connection was carried by the first node's old daemon until its deadline.
  assert.ok(summary.longLived.ended, 'the long-lived connection was closed at the deadline');
  const log = await readFile(fx.mesh.logFile('node-n1'), 'utf8');
  assert.match(log, /"msg":"close"[^\n]*"reason":"drain deadline reached"/, 'the close at the deadline is logged, one line per connection');
  assert.match(log, /another daemon serves every listener: stopping accepting/);
});

test(cniTitle('kill -9 of a node\'s daemon fails closed (no payload in clear on the underlay), and after a restart meshed connections work again'), { timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-e2e-kill-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const serverIp = fx.cluster.pod('shop/echo').ip;
  const capture = await startCapture(fx.cluster, fx.cluster.node('n1').netns, 'eth0', join(dir, 'n1-eth0.pcap'));
  const secret = `while-down-${randomBytes(6).toString('hex')}`;
  let pcap: Buffer;
  let firstMeshedMs: number;
  try {
    fx.mesh.nodes.get('n1')!.signal('SIGKILL');
    await fx.mesh.nodes.get('n1')!.exited;
    const whileDown = await attempt(fx.cluster, 'shop/client', serverIp, 7000, secret);
    assert.equal(whileDown.ok, false, `reached the server with n1's daemon dead: ${JSON.stringify(whileDown)}`);
    const restarted = Date.now();
    fx.mesh.nodes.delete('n1');
    const starting = fx.mesh.startNode('n1');
    // The first meshed connection after the restart, tried as soon as it can be.
    for (;;) {
      const r = await attempt(fx.cluster, 'shop/client', serverIp, 7000, 'back');
      if (r.ok) break;
      if (Date.now() - restarted > 20_000) assert.fail(`no meshed connection within 20 s of the restart: ${r.error}`);
      await sleep(50);
    }
    firstMeshedMs = Date.now() - restarted;
    await starting;
  } finally {
    pcap = await capture.stop();
  }
  t.diagnostic(`kill -9 then restart: first meshed connection ${firstMeshedMs} ms after the restart began (process start included)`);
  const segments = tcpPackets(pcap).filter((s) => s.src !== fx.cluster.controlPlane.ip && s.dst !== fx.cluster.controlPlane.ip);
  assert.ok(!segments.some((s) => s.payload.includes(secret)), 'a payload crossed the underlay in clear while the daemon was down');
  assert.deepEqual(segments.filter((s) => s.dstPort !== 15008 && s.srcPort !== 15008).map((s) => `${s.src}:${s.srcPort} > ${s.dst}:${s.dstPort}`), []);
});

test(cniTitle('a daemon restarted while the control plane is down serves its pods with the certificates it kept'), { timeout: 60_000 }, async (t) => {
  const serverIp = fx.cluster.pod('shop/echo').ip;
  await fx.mesh.controlPlane!.stop();
  t.after(() => fx.mesh.startControlPlane());
  await fx.mesh.stopNode('n2');
  const restarted = Date.now();
  // Ready without the control plane: config from disk, certificates from the cache.
  const starting = fx.mesh.startNode('n2');
  let firstMeshedMs: number | undefined;
  while (Date.now() - restarted < 20_000) {
    const r = await attempt(fx.cluster, 'shop/client', serverIp, 7000, 'kept');
    if (r.ok) {
      firstMeshedMs = Date.now() - restarted;
      break;
    }
    await sleep(50);
  }
  await starting;
  assert.ok(firstMeshedMs !== undefined, 'no meshed connection to n2 within 20 s of its restart with the control plane down');
  t.diagnostic(`control plane down, n2 restarted: first meshed connection ${firstMeshedMs} ms after the restart began`);
  const log = await readFile(fx.mesh.logFile('node-n2'), 'utf8');
  assert.match(log, /certificate kept from before the restart/);
});
