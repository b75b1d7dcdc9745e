import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigStore } from './config-store.ts';
import type { AuthorizationPolicy, HttpRoute, Resource, Service, Workload } from '../core/types.ts';
import { explain } from './explain.ts';

function workload(name: string, ns: string, node: string, ip: string, enrolled = true, mtlsMode: 'strict' | 'permissive' = 'permissive'): Workload {
  return { uid: `uid-${name}`, namespace: ns, name, workloadName: name, serviceAccount: name, node, ip, labels: { app: name }, enrolled, mtlsMode, namedPorts: {} };
}

const client = workload('client', 'demo', 'node-1', '10.244.1.10');
const outsider = workload('outsider', 'legacy', 'node-1', '10.244.1.20', false);
const serverA = workload('server-a', 'demo', 'node-2', '10.244.2.10');
const local = workload('local', 'demo', 'node-1', '10.244.1.11');
const strict = workload('vault', 'secure', 'node-2', '10.244.2.30', true, 'strict');
const service: Service = {
  namespace: 'demo', name: 'server', vips: ['10.96.0.10'], opaquePorts: [],
  ports: [{ name: 'tcp', port: 80, targetPort: 7000, targetPortName: '', appProtocol: '' }],
  endpoints: [{ workloadUid: serverA.uid, ip: serverA.ip, ready: true }, { workloadUid: local.uid, ip: local.ip, ready: true }],
};
const denyLegacy: AuthorizationPolicy = {
  namespace: 'demo', name: 'deny-client-7001', selector: null, action: 'DENY',
  rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/client'], notPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [], notIpBlocks: [] }], to: [{ ports: [7001], notPorts: [], methods: [], notMethods: [], paths: [], notPaths: [] }] }],
};

function store(): ConfigStore {
  const s = new ConfigStore('node-1');
  const upserts: Resource[] = [
    ...[client, outsider, serverA, local, strict].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
    { kind: 'service', key: 'demo/server', version: 1, service },
    { kind: 'policy', key: 'demo/deny-client-7001', version: 1, policy: denyLegacy },
  ];
  s.apply({ epoch: 'e', version: 1, snapshot: true, upserts, removals: [] });
  return s;
}

test('explain: an enrolled client to a VIP lists every endpoint with its path and the policy decision', () => {
  const e = explain(store(), { sourceIp: client.ip, destinationIp: '10.96.0.10', port: 80 });
  assert.equal(e.service, 'demo/server');
  assert.match(e.capture, /outbound \(15001\)/);
  assert.equal(e.source.identity, 'spiffe://cluster.local/ns/demo/sa/client');
  assert.deepEqual(e.targets.map((t) => [t.workload, t.port, t.path, t.security, t.authorization?.allowed]), [
    ['demo/server-a', 7000, 'hbone', 'mutual_tls', true],
    ['demo/local', 7000, 'same-node', 'mutual_tls', true],
  ]);
});

test('explain: names the DENY policy that refuses a connection', () => {
  const e = explain(store(), { sourceIp: client.ip, destinationIp: serverA.ip, port: 7001 });
  assert.equal(e.targets[0]!.authorization?.allowed, false);
  assert.equal(e.targets[0]!.authorization?.policy, 'demo/deny-client-7001');
});

test('explain: a non-mesh source goes as plaintext, captured where the destination is, and strict namespaces refuse it', () => {
  const toLocal = explain(store(), { sourceIp: outsider.ip, destinationIp: local.ip, port: 7000 });
  assert.match(toLocal.capture, /inbound plaintext \(15006\)/);
  assert.deepEqual([toLocal.targets[0]!.path, toLocal.targets[0]!.security], ['plaintext', 'none'], 'captured and decided by the mesh: not passthrough');
  assert.equal(toLocal.source.identity, null, 'a pod outside the mesh has no identity');
  const viaVip = explain(store(), { sourceIp: outsider.ip, destinationIp: '10.96.0.10', port: 80 });
  assert.match(viaVip.capture, /the Service has an enrolled endpoint on this node/);
  const toStrict = explain(store(), { sourceIp: outsider.ip, destinationIp: strict.ip, port: 443 });
  assert.equal(toStrict.targets[0]!.authorization?.allowed, false);
  assert.match(toStrict.targets[0]!.authorization!.reason, /requires mutual TLS/);
});

test('explain: a destination outside the mesh passes through; a port the Service lacks is a clear error', () => {
  const out = explain(store(), { sourceIp: client.ip, destinationIp: '10.0.0.1', port: 443 });
  assert.deepEqual(out.targets.map((t) => [t.workload, t.path, t.authorization]), [[null, 'passthrough', null]]);
  assert.throws(() => explain(store(), { sourceIp: client.ip, destinationIp: '10.96.0.10', port: 81 }), (err: Error & { code?: string }) =>
    err.code === 'NM_BAD_EXPLAIN_QUERY' && /service demo\/server has no port 81; its ports are 80/.test(err.message));
});

test('explain: a plaintext pod to a meshed server is captured there and refused by the DENY policy that names it, with no identity', () => {
  // On the destination's node, as `nodemesh explain --node node-2` asks it.
  const s = new ConfigStore('node-2');
  const denyPlaintext: AuthorizationPolicy = {
    namespace: 'demo', name: 'deny-plaintext-7001', selector: null, action: 'DENY',
    rules: [{ from: [{ principals: [], notPrincipals: ['*'], namespaces: [], notNamespaces: [], ipBlocks: [], notIpBlocks: [] }], to: [{ ports: [7001], notPorts: [], methods: [], notMethods: [], paths: [], notPaths: [] }] }],
  };
  s.apply({ epoch: 'e', version: 1, snapshot: true, removals: [], upserts: [
    ...[client, outsider, serverA].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
    { kind: 'policy', key: 'demo/deny-plaintext-7001', version: 1, policy: denyPlaintext },
  ] });
  const e = explain(s, { sourceIp: outsider.ip, destinationIp: serverA.ip, port: 7001 });
  assert.equal(e.source.identity, null);
  assert.match(e.capture, /captured on this node by inbound plaintext \(15006\)/);
  assert.deepEqual(e.targets.map((t) => [t.path, t.security, t.authorization?.allowed, t.authorization?.policy]), [['plaintext', 'none', false, 'demo/deny-plaintext-7001']]);
  // The meshed client from node-1, explained on node-2: HBONE with its own identity, which the policy does not deny.
  const meshed = explain(s, { sourceIp: client.ip, destinationIp: serverA.ip, port: 7001 });
  assert.equal(meshed.source.identity, 'spiffe://cluster.local/ns/demo/sa/client');
  assert.deepEqual(meshed.targets.map((t) => [t.path, t.security, t.authorization?.allowed]), [['hbone', 'mutual_tls', true]]);
});

test('explain: for a Service with routes it names the route and rule the given request takes, with the rule\'s backends and filters', () => {
  const s = store();
  const ref = (name: string, weight: number) => ({ namespace: 'demo', name, port: 80, weight, invalidReason: name === 'gone' ? 'BackendNotFound: Service demo/gone does not exist' : '' });
  const route: HttpRoute = {
    namespace: 'demo', name: 'split', parents: [{ namespace: 'demo', name: 'server', port: 0 }], hostnames: [], creationTimestamp: '2025-01-01T00:00:00Z',
    rules: [
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'yes' }], queryParams: [], method: '' }], filters: [], backendRefs: [ref('gone', 1)], requestTimeoutMs: 0, backendRequestTimeoutMs: 0 },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [], queryParams: [], method: 'GET' }],
        filters: [{ type: 'RequestHeaderModifier', scheme: '', hostname: '', port: 0, statusCode: 0, headerModifier: { set: [], add: [], remove: [] } }],
        backendRefs: [{ ...ref('server', 70), filters: [{ type: 'ResponseHeaderModifier', scheme: '', hostname: '', port: 0, statusCode: 0 }] }, ref('server-b', 30)],
        requestTimeoutMs: 0, backendRequestTimeoutMs: 0,
      },
    ],
  };
  s.apply({ epoch: 'e', version: 2, snapshot: false, removals: [], upserts: [{ kind: 'route', key: 'demo/split', version: 2, route }] });
  const q = (http?: { method: string; path: string; headers: Record<string, string> }) => explain(s, { sourceIp: client.ip, destinationIp: '10.96.0.10', port: 80, ...(http ? { http } : {}) }).route;
  const get = q({ method: 'GET', path: '/api/items?x=1', headers: {} })!;
  assert.deepEqual([get.decision, get.route, get.rule, get.match, get.filters], ['matched', 'HTTPRoute demo/split', 1, 0, ['RequestHeaderModifier']]);
  assert.deepEqual(get.backends, [
    { service: 'demo/server', port: 80, weight: 70, invalidReason: '', filters: ['ResponseHeaderModifier'] },
    { service: 'demo/server-b', port: 80, weight: 30, invalidReason: '', filters: [] },
  ]);
  const canary = q({ method: 'POST', path: '/api', headers: { 'X-Canary': 'yes' } })!;
  assert.deepEqual([canary.rule, canary.backends?.[0]?.invalidReason], [0, 'BackendNotFound: Service demo/gone does not exist']);
  assert.equal(q()!.decision, 'no-match', 'GET / matches no rule: the request would get 404');
  assert.equal(explain(s, { sourceIp: client.ip, destinationIp: serverA.ip, port: 7000 }).route, undefined, 'a pod IP is not routed');
});
