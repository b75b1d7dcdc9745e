// HTTP through the real mesh: the control plane and two `nodemesh node`
// processes on the namespace cluster, traffic captured by iptables and carried in
// HBONE. An HTTPRoute splits one keep-alive connection's requests 90/10, and a
// policy allowing only GET /public/* answers 403 on the destination node. Needs
// root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeObject } from '../controlplane/source.ts';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import { generateConfigDir, writeObject } from './cluster/config-dir.ts';
import { startMesh, type Mesh } from './cluster/mesh.ts';
import { runPrefix, sweepStale } from './cluster/netns.ts';
import { startServer } from './cluster/servers.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { E2E_CNI, nodeGet, cniTitle } from './e2e/mesh-fixture.ts';
import { waitUntil } from './e2e/wait-until.ts';

const PREFIX = 'nml';
const PORT = 8080;
const WS_PORT = 9090;
const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'web-v1', namespace: 'shop', node: 'n2', labels: { app: 'web', version: 'v1' }, serviceAccount: 'web' },
    { name: 'web-v2', namespace: 'shop', node: 'n2', labels: { app: 'web', version: 'v2' }, serviceAccount: 'web' },
  ],
  services: [
    { name: 'web', namespace: 'shop', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: PORT }] },
    { name: 'web-v1', namespace: 'shop', selector: { app: 'web', version: 'v1' }, ports: [{ name: 'http', port: 80, targetPort: PORT }] },
    { name: 'web-v2', namespace: 'shop', selector: { app: 'web', version: 'v2' }, ports: [{ name: 'http', port: 80, targetPort: PORT }] },
    { name: 'chat', namespace: 'shop', selector: { app: 'web', version: 'v1' }, ports: [{ name: 'http-ws', port: 80, targetPort: WS_PORT }] },
  ],
};

const SPLIT: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
  metadata: { name: 'web-split', namespace: 'shop', creationTimestamp: '2025-01-01T00:00:00Z' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }],
    rules: [{ backendRefs: [{ name: 'web-v1', port: 80, weight: 90 }, { name: 'web-v2', port: 80, weight: 10 }] }],
  },
};

const PUBLIC_ONLY: KubeObject = {
  apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy',
  metadata: { name: 'public-only', namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'], paths: ['/public/*'] } }] }] },
};

/** Runs in the client pod: requests on one keep-alive connection, prints one JSON line per request. */
const CLIENT = `
import http from 'node:http';
const [host, count, method, ...paths] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
for (let i = 0; i < Number(count); i++) {
  const path = paths[i % paths.length];
  const line = await new Promise((resolve) => {
    const req = http.request({ host, port: 80, path, method, agent }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => { let pod = ''; try { pod = JSON.parse(body).pod; } catch {} resolve({ status: res.statusCode, pod, xff: res.statusCode === 200 ? JSON.parse(body).headers['x-forwarded-for'] : undefined }); });
    });
    req.on('error', (e) => resolve({ status: 0, error: e.message }));
    req.end();
  });
  console.log(JSON.stringify(line));
}
agent.destroy();
`;

/** Runs in a server pod: a WebSocket echo server that prefixes its pod name. */
const WS_SERVER = `
import { WebSocketServer } from 'ws';
const wss = new WebSocketServer({ port: Number(process.argv[1]) }, () => console.log('listening'));
wss.on('connection', (ws, req) => ws.on('message', (m) => ws.send(process.argv[2] + ':' + m + ':' + (req.headers['x-forwarded-for'] ?? ''))));
process.on('SIGTERM', () => process.exit(0));
`;

/** Runs in the client pod: one WebSocket round trip. */
const WS_CLIENT = `
import { WebSocket } from 'ws';
const ws = new WebSocket('ws://' + process.argv[1] + '/chat');
ws.on('open', () => ws.send('hello'));
ws.on('message', (m) => { console.log(String(m)); ws.close(); });
ws.on('error', (e) => { console.log('error: ' + e.message); process.exit(1); });
`;

let cluster: Cluster;
let mesh: Mesh;
let configDir: string;

before(async () => {
  await sweepStale(PREFIX);
  configDir = await mkdtemp(join(tmpdir(), 'nodemesh-l7-'));
  cluster = await createCluster({ ...SPEC, cni: E2E_CNI }, { prefix: runPrefix(PREFIX, 'http') });
  await generateConfigDir(cluster, configDir);
  await writeObject(configDir, SPLIT);
  mesh = await startMesh(cluster, { configDir });
  await startServer(cluster, 'shop/web-v1', 'http', PORT, 'web-v1');
  await startServer(cluster, 'shop/web-v2', 'http', PORT, 'web-v2');
  await cluster.spawn(cluster.pod('shop/web-v1').netns, [process.execPath, '--input-type=module', '-e', WS_SERVER, String(WS_PORT), 'web-v1']).waitForOutput('listening');
});

after(async () => {
  await cluster?.teardown();
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

async function requests(count: number, method: string, ...paths: string[]): Promise<{ status: number; pod: string; xff?: string; error?: string }[]> {
  const vip = cluster.services.find((s) => s.name === 'web')!.clusterIP;
  const res = await cluster.exec(cluster.pod('shop/client').netns, [process.execPath, '--input-type=module', '-e', CLIENT, vip, String(count), method, ...paths], { timeoutMs: 120_000 });
  return res.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

test(cniTitle('an HTTPRoute splits the requests of one keep-alive connection 90/10 across nodes, with the client pod IP in x-forwarded-for'), async () => {
  const results = await requests(1000, 'GET', '/public/a');
  const failed = results.filter((r) => r.status !== 200);
  assert.equal(failed.length, 0, `${failed.length} failed, e.g. ${JSON.stringify(failed[0])}\n${await mesh.logs()}`);
  const v1 = results.filter((r) => r.pod === 'web-v1').length;
  assert.ok(v1 >= 850 && v1 <= 950, `web-v1 served ${v1} of 1000`);
  assert.equal(results[0]!.xff, cluster.pod('shop/client').ip);
});

test(cniTitle('a policy allowing only GET /public/* answers 403 on the destination node, counted in its request metrics'), async () => {
  const file = await writeObject(configDir, PUBLIC_ONLY);
  try {
    await waitUntil('n2 to receive policy shop/public-only', async () => (await nodeGet(cluster, 'n2', 'http://127.0.0.1:15000/policies')).includes('public-only'));
    assert.deepEqual((await requests(2, 'GET', '/public/x', '/private')).map((r) => r.status), [200, 403]);
    assert.deepEqual((await requests(1, 'POST', '/public/x')).map((r) => r.status), [403]);
    const metrics = await nodeGet(cluster, 'n2', 'http://127.0.0.1:15020/metrics');
    const forbidden = metrics.split('\n').filter((l) => l.startsWith('nodemesh_requests_total{reporter="destination"') && l.includes('response_code="403"'));
    const total = forbidden.reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    assert.equal(total, 2, forbidden.join('\n'));
  } finally {
    await rm(file, { force: true });
    await waitUntil('n2 to drop policy shop/public-only', async () => !(await nodeGet(cluster, 'n2', 'http://127.0.0.1:15000/policies')).includes('public-only'));
  }
});

test(cniTitle('a WebSocket upgrade passes through both nodes and echoes'), async () => {
  const vip = cluster.services.find((s) => s.name === 'chat')!.clusterIP;
  const res = await cluster.exec(cluster.pod('shop/client').netns, [process.execPath, '--input-type=module', '-e', WS_CLIENT, vip], { timeoutMs: 30_000 });
  assert.equal(res.stdout.trim(), `web-v1:hello:${cluster.pod('shop/client').ip}`, `${res.stdout}${res.stderr}\n${await mesh.logs()}`);
});
