// GRPCRoute end to end on the namespace cluster, worded after the Gateway API
// specification: the client pod on n1, one backend on n2 and one on n3, so no
// backend is on the client's node and the node's own balancing cannot lean the
// split (without a route, a same-node endpoint took 70-79% of the calls). Every
// call is real gRPC over HTTP/2, routed per stream by the client's node and
// carried in HBONE. Header modifiers on a rule and on a backendRef, weights,
// method matches, a mirror, and the mesh's own UNIMPLEMENTED for a call no rule matches.
// Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { writeObject } from './cluster/config-dir.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import type { ClusterProcess } from './cluster/processes.ts';
import { startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { grpcRoute, waitForRoute } from './e2e/route-config.ts';
import { waitUntil } from './e2e/wait-until.ts';

const PREFIX = 'nmk';
const PORT = 50051;
const SERVICE = 'nodemesh.test.Greeter';
const script = fileURLToPath(new URL('./e2e/grpc-app.ts', import.meta.url));
const grpcService = (name: string, selector: Record<string, string>) => ({ name, namespace: 'shop', selector, ports: [{ name: 'grpc', port: PORT, appProtocol: 'grpc' }] });

const SPEC: ClusterSpec = {
  nodes: 3,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'greeter-a', namespace: 'shop', node: 'n2', labels: { app: 'greeter', version: 'a' }, serviceAccount: 'greeter' },
    { name: 'greeter-b', namespace: 'shop', node: 'n3', labels: { app: 'greeter', version: 'b' }, serviceAccount: 'greeter' },
  ],
  services: [grpcService('greeter', { app: 'greeter' }), grpcService('greeter-a', { app: 'greeter', version: 'a' }), grpcService('greeter-b', { app: 'greeter', version: 'b' })],
};

const set = (name: string, value: string) => ({ name, value });

const ROUTE = grpcRoute('shop', 'greeter', 'greeter', PORT, [
  {
    matches: [{ method: { service: SERVICE, method: 'SayHello' }, headers: [{ name: 'x-test', value: 'headers' }] }],
    filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [set('x-set', 'by-route')], add: [set('x-add', 'by-route')], remove: ['x-remove'] } }],
    backendRefs: [{ name: 'greeter-a', port: PORT }],
  },
  {
    matches: [{ method: { service: SERVICE, method: 'SayHello' } }],
    backendRefs: [
      { name: 'greeter-a', port: PORT, weight: 70, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [set('x-backend', 'a')] } }] },
      { name: 'greeter-b', port: PORT, weight: 30 },
    ],
  },
  {
    matches: [{ method: { type: 'RegularExpression', service: 'nodemesh\\.test\\..+', method: 'Count.*' } }],
    filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'greeter-a', port: PORT } } }],
    backendRefs: [{ name: 'greeter-b', port: PORT }],
  },
]);

interface Tally {
  calls: number;
  pods: Record<string, number>;
  codes: Record<string, number>;
  seen: Record<string, string[]>;
  details: string[];
}

let fx: MeshFixture;
let greeterA: ClusterProcess;

before(async () => {
  fx = await startMeshFixture(SPEC, 'grpcroute', PREFIX);
  await writeObject(fx.configDir, ROUTE);
  const servers = ['greeter-a', 'greeter-b'].map((pod) => fx.cluster.spawn(fx.cluster.pod(`shop/${pod}`).netns, [process.execPath, script, 'serve', String(PORT), pod]));
  greeterA = servers[0]!;
  await Promise.all(servers.map((s) => s.waitForOutput('listening')));
  await waitForRoute(fx.cluster, 'n1', 'shop', 'greeter', 'as a GRPCRoute with its three rules', (r) => r.kind === 'GRPCRoute' && r.rules.length === 3);
});
after(() => fx?.teardown());

async function calls(n: number, method: string, metadata: Record<string, string> = {}): Promise<Tally> {
  const target = `${fx.cluster.service('shop/greeter').clusterIP}:${PORT}`;
  const res = await fx.cluster.exec(fx.cluster.pod('shop/client').netns, [process.execPath, script, 'many', target, String(n), method, JSON.stringify(metadata)], { timeoutMs: 120_000 });
  return JSON.parse(res.stdout) as Tally;
}

const seenBy = (tally: Tally, pod: string) => (tally.seen[pod] ?? []).map((s) => JSON.parse(s) as Record<string, string>);

test(cniTitle('a GRPCRoute RequestHeaderModifier sets, adds and removes request metadata as the backend on another node sees it'), async () => {
  const tally = await calls(5, 'SayHello', { 'x-test': 'headers', 'x-set': 'client', 'x-add': 'client', 'x-remove': 'client' });
  assert.deepEqual([tally.pods, tally.codes], [{ 'greeter-a': 5 }, { 0: 5 }], JSON.stringify(tally));
  assert.deepEqual(seenBy(tally, 'greeter-a'), [{ 'x-test': 'headers', 'x-set': 'by-route', 'x-add': 'client,by-route' }]);
});

let split: Tally | undefined;

test(cniTitle('a GRPCRoute 70/30 split holds within ±5% over 1,000 calls from a client on a node that runs neither backend'), async (t) => {
  split = await calls(1000, 'SayHello');
  assert.deepEqual(split.codes, { 0: 1000 }, JSON.stringify(split));
  const a = split.pods['greeter-a'] ?? 0;
  const b = split.pods['greeter-b'] ?? 0;
  t.diagnostic(`greeter-a ${a}, greeter-b ${b} of 1000`);
  assert.equal(a + b, 1000);
  assert.ok(a >= 650 && a <= 750, `greeter-a answered ${a} of 1000 calls; weight 70 allows 650-750`);
});

test(cniTitle('filters on a backendRef apply only to the calls sent to that backend'), () => {
  assert.ok(split, 'needs the split test\'s calls');
  assert.deepEqual(seenBy(split, 'greeter-a'), [{ 'x-backend': 'a' }], 'every call to greeter-a carries its backendRef\'s header');
  assert.deepEqual(seenBy(split, 'greeter-b'), [{}], 'no call to greeter-b carries it');
});

test(cniTitle('GRPCRoute method matching: CountTo takes the RegularExpression rule to greeter-b only'), async () => {
  const tally = await calls(20, 'CountTo');
  assert.deepEqual([tally.pods, tally.codes], [{ 'greeter-b': 20 }, { 0: 20 }], JSON.stringify(tally));
});

test(cniTitle('a GRPCRoute RequestMirror copies each streaming call to greeter-a while the client gets greeter-b\'s answers'), async () => {
  // The CountTo calls of the test above (and these) were mirrored: greeter-a served them too, unseen by the client.
  const tally = await calls(5, 'CountTo');
  assert.deepEqual(tally.pods, { 'greeter-b': 5 });
  await waitUntil('greeter-a to have served the 25 mirrored CountTo calls', () => greeterA.stdout.split('served CountTo to=2').length - 1 >= 25);
});

test(cniTitle('a call no GRPCRoute rule matches is answered UNIMPLEMENTED by the mesh, not passed to a backend'), async () => {
  const tally = await calls(3, 'Unknown');
  assert.deepEqual([tally.pods, tally.codes], [{ '': 3 }, { 12: 3 }], JSON.stringify(tally));
  assert.match(tally.details[0] ?? '', /no rule of the GRPCRoutes attached to shop\/greeter matches POST \/nodemesh\.test\.Greeter\/Unknown/);
});
