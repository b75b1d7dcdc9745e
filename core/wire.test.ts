import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConfigUpdate, Resource } from './types.ts';
import { meshService, SnapshotAssembler, updateFromWire, updateToMessages } from './wire.ts';
import type { WireUpdate } from './wire.ts';

/** Through protobuf and back, as the Watch stream carries it. */
function overTheWire(message: WireUpdate): WireUpdate {
  const method = meshService().service.Watch!;
  return method.responseDeserialize(method.responseSerialize(message)) as WireUpdate;
}

function workloads(n: number): Resource[] {
  return Array.from({ length: n }, (_, i) => ({
    kind: 'workload' as const, key: `uid-${i}`, version: i,
    workload: { uid: `uid-${i}`, namespace: 'ns', name: `p${i}`, workloadName: 'p', serviceAccount: 'sa', node: 'n', ip: `10.0.${i >> 8}.${i & 255}`, labels: {}, enrolled: true, mtlsMode: 'permissive' as const, namedPorts: {} },
  }));
}

test('wire: a large snapshot travels in parts and is applied whole; deltas travel whole', () => {
  const snapshot: ConfigUpdate = { epoch: 'e', version: 7, snapshot: true, upserts: workloads(5), removals: [] };
  const parts = updateToMessages(snapshot, 2).map(overTheWire);
  assert.deepEqual(parts.map((p) => [p.upserts.length, p.more]), [[2, true], [2, true], [1, false]]);
  const assembler = new SnapshotAssembler();
  assert.equal(assembler.accept(parts[0]!), undefined);
  assert.equal(assembler.accept(parts[1]!), undefined);
  const whole = assembler.accept(parts[2]!)!;
  const { update, rejected } = updateFromWire(whole);
  assert.deepEqual(rejected, []);
  assert.equal(update.snapshot, true);
  assert.deepEqual(update.upserts.map((r) => r.key), ['uid-0', 'uid-1', 'uid-2', 'uid-3', 'uid-4']);

  const delta: ConfigUpdate = { epoch: 'e', version: 8, snapshot: false, upserts: workloads(5), removals: [] };
  assert.equal(updateToMessages(delta, 2).length, 1);
});

test('wire: parts of a snapshot cut short are dropped, never applied as if whole', () => {
  const parts = updateToMessages({ epoch: 'e', version: 1, snapshot: true, upserts: workloads(3), removals: [] }, 2);
  const assembler = new SnapshotAssembler();
  assembler.accept(parts[0]!);
  assembler.reset();
  const next = updateToMessages({ epoch: 'e', version: 2, snapshot: true, upserts: workloads(1), removals: [] }, 2);
  assert.equal(assembler.accept(next[0]!)!.upserts.length, 1);
});

test('wire: a route with a regex the node cannot match in linear time is rejected alone, naming the field', () => {
  const route = (name: string, header: string): Resource => ({
    kind: 'route', key: `shop/${name}`, version: 1,
    route: {
      namespace: 'shop', name, parents: [{ namespace: 'shop', name: 'cart', port: 0 }], hostnames: [], creationTimestamp: '',
      rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/(a+)+' }, headers: [{ type: 'RegularExpression', name: 'x-v', value: header }], queryParams: [], method: '' }], filters: [], backendRefs: [], requestTimeoutMs: 0, backendRequestTimeoutMs: 0 }],
    },
  });
  const [message] = updateToMessages({ epoch: 'e', version: 1, snapshot: true, upserts: [route('good', 'v[12]'), route('bad', '(?=v)v1')], removals: [] });
  const { update, rejected } = updateFromWire(overTheWire(message!));
  assert.deepEqual(update.upserts.map((r) => r.key), ['shop/good']);
  assert.deepEqual(rejected.map((e) => [e.object, e.field]), [['route "shop/bad"', 'route.rules[0].matches[0].headers[0].value']]);
  assert.match(rejected[0]!.message, /lookaheads/);
});

test('wire: a pod\'s limit annotations travel to the node; a pod without them gets the node\'s defaults', () => {
  const [limited, plain] = workloads(2);
  if (limited!.kind === 'workload') Object.assign(limited!.workload, { maxConnections: 2000, maxConcurrentRequests: 50 });
  const update: ConfigUpdate = { epoch: 'e', version: 1, snapshot: true, upserts: [limited!, plain!], removals: [] };
  const [message] = updateToMessages(update).map(overTheWire);
  const { update: back, rejected } = updateFromWire(message!);
  assert.deepEqual(rejected, []);
  const [a, b] = back.upserts.map((r) => (r.kind === 'workload' ? r.workload : undefined));
  assert.equal(a!.maxConnections, 2000);
  assert.equal(a!.maxConcurrentRequests, 50);
  assert.equal('maxConnections' in b!, false);
  assert.equal('maxConcurrentRequests' in b!, false);
});

test('wire: a GRPCRoute\'s kind, a backendRef\'s filters, a mirror and a rule\'s retry travel to the node; a retry out of bounds is rejected alone', () => {
  const backend = { namespace: 'shop', name: 'cart-a', port: 80, weight: 70, invalidReason: '' };
  const route = (name: string, attempts: number): Resource => ({
    kind: 'route', key: `GRPCRoute/shop/${name}`, version: 1,
    route: {
      kind: 'GRPCRoute', namespace: 'shop', name, parents: [{ namespace: 'shop', name: 'cart', port: 0 }], hostnames: [], creationTimestamp: '',
      rules: [{
        matches: [{ path: { type: 'Exact', value: '/pkg.Svc/Get' }, headers: [], queryParams: [], method: '' }],
        filters: [{ type: 'RequestMirror', scheme: '', hostname: '', port: 0, statusCode: 0, mirror: { ...backend, name: 'shadow', weight: 1 } }],
        backendRefs: [{ ...backend, filters: [{ type: 'RequestHeaderModifier', scheme: '', hostname: '', port: 0, statusCode: 0, headerModifier: { set: [{ name: 'x-to', value: 'a' }], add: [], remove: [] } }] }],
        requestTimeoutMs: 0, backendRequestTimeoutMs: 0, retry: { codes: [500], attempts, backoffMs: 25 },
      }],
    },
  });
  const [message] = updateToMessages({ epoch: 'e', version: 1, snapshot: true, upserts: [route('good', 2), route('greedy', 1_000_000)], removals: [] });
  const { update, rejected } = updateFromWire(overTheWire(message!));
  assert.deepEqual(rejected.map((e) => e.field), ['route.rules[0].retry.attempts']);
  const got = update.upserts[0]!;
  assert.ok(got.kind === 'route');
  assert.equal(got.route.kind, 'GRPCRoute');
  const [rule] = got.route.rules;
  assert.deepEqual(rule!.retry, { codes: [500], attempts: 2, backoffMs: 25 });
  assert.equal(rule!.filters[0]!.mirror?.name, 'shadow');
  assert.deepEqual(rule!.backendRefs[0]!.filters?.[0]?.headerModifier?.set, [{ name: 'x-to', value: 'a' }]);
});
