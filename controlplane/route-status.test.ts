import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { MeshModel } from './mesh-model.ts';
import { KubernetesSource } from './kubernetes-source.ts';
import { KubeApi } from './kubernetes-api.ts';
import { KubernetesRouteStatusWriter } from './route-status-writer.ts';
import { CONTROLLER_NAME, routeStatusOf, sameConditions, type RouteParentStatus, type RouteStatus } from './route-status.ts';
import { serveStatus } from './status-server.ts';
import { FakeApiServer, type FakeObject } from './testdata/fake-api-server.ts';
import type { KubeObject } from './source.ts';

const ORIGIN = 'test.yaml';
const FAST = { minRetryMs: 20, maxRetryMs: 200, absentRetryMs: 50 };

function route(name: string, rules: unknown[], extra: { kind?: string; namespace?: string; parent?: Record<string, unknown> } = {}): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: extra.kind ?? 'HTTPRoute',
    metadata: { name, namespace: extra.namespace ?? 'shop' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80, ...extra.parent }], rules },
  };
}

const svc = (name: string, namespace = 'shop'): KubeObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } });

/** "Type=Status Reason" of each condition of the first parent. */
function summary(status: RouteStatus | { parents?: RouteParentStatus[] } | undefined): string[] {
  const ours = status?.parents?.find((p) => p.controllerName === CONTROLLER_NAME);
  return ours?.conditions.map((c) => `${c.type}=${c.status} ${c.reason}`) ?? [];
}

async function until<T>(what: string, get: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('route status conditions follow the spec: Accepted, ResolvedRefs with BackendNotFound, RefNotPermitted, InvalidKind; UnsupportedValue and NoMatchingParent', async () => {
  const model = new MeshModel();
  for (const s of [svc('web'), svc('web-v2'), svc('far', 'other')]) model.upsert(s, ORIGIN);
  model.upsert(route('good', [{ backendRefs: [{ name: 'web-v2', port: 80 }] }]), ORIGIN);
  model.upsert(route('missing', [{ backendRefs: [{ name: 'gone', port: 80 }] }]), ORIGIN);
  model.upsert(route('cross', [{ backendRefs: [{ name: 'far', namespace: 'other', port: 80 }] }]), ORIGIN);
  model.upsert(route('kind', [{ backendRefs: [{ group: 'example.com', kind: 'Bucket', name: 'b' }] }]), ORIGIN);
  model.upsert(route('bad', [{ matches: [{ path: { type: 'RegularExpression', value: '(a)\\1' } }] }]), ORIGIN);
  model.upsert(route('orphan', [{ backendRefs: [{ name: 'web', port: 80 }] }], { parent: { name: 'no-such-service' } }), ORIGIN);
  model.upsert(route('rpc', [{ backendRefs: [{ name: 'gone', port: 80 }] }], { kind: 'GRPCRoute' }), ORIGIN);
  model.synced();
  await model.whenSynced();
  const byName = new Map(model.routeStatuses().map((s) => [`${s.kind} ${s.name}`, s]));
  assert.deepEqual(summary(byName.get('HTTPRoute good')), ['Accepted=True Accepted', 'ResolvedRefs=True ResolvedRefs']);
  assert.deepEqual(summary(byName.get('HTTPRoute missing')), ['Accepted=True Accepted', 'ResolvedRefs=False BackendNotFound']);
  assert.deepEqual(summary(byName.get('HTTPRoute cross')), ['Accepted=True Accepted', 'ResolvedRefs=False RefNotPermitted']);
  assert.deepEqual(summary(byName.get('HTTPRoute kind')), ['Accepted=True Accepted', 'ResolvedRefs=False InvalidKind']);
  assert.deepEqual(summary(byName.get('HTTPRoute bad')), ['Accepted=False UnsupportedValue']);
  assert.match(byName.get('HTTPRoute bad')!.parents[0]!.conditions[0]!.message, /^spec\.rules\[0\]\.matches\[0\]\.path\.value: .*backreference/i);
  assert.deepEqual(summary(byName.get('HTTPRoute orphan')), ['Accepted=False NoMatchingParent', 'ResolvedRefs=True ResolvedRefs']);
  assert.deepEqual(summary(byName.get('GRPCRoute rpc')), ['Accepted=True Accepted', 'ResolvedRefs=False BackendNotFound']);
  assert.deepEqual(byName.get('HTTPRoute good')!.parents[0]!.parentRef, { group: '', kind: 'Service', namespace: 'shop', name: 'web', port: 80 });
  assert.equal(byName.get('HTTPRoute good')!.parents[0]!.controllerName, 'nodemesh.io/mesh');
});

test('a route status is announced once per change, and a condition keeps its transition time while its status holds', async () => {
  const model = new MeshModel();
  const heard: RouteStatus[] = [];
  model.onRouteStatus((s) => heard.push(s));
  model.upsert(svc('web'), ORIGIN);
  model.upsert(route('r', [{ backendRefs: [{ name: 'web-v2', port: 80 }] }]), ORIGIN);
  model.synced();
  await model.whenSynced();
  assert.deepEqual(heard.map(summary), [['Accepted=True Accepted', 'ResolvedRefs=False BackendNotFound']]);
  model.upsert({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop', uid: 'u1' }, spec: { nodeName: 'n1', containers: [] }, status: { podIP: '10.0.0.9' } }, ORIGIN);
  await sleep(1);
  assert.equal(heard.length, 1, 'nothing about the route changed');
  model.upsert(svc('web-v2'), ORIGIN);
  await sleep(1);
  assert.deepEqual(heard.map(summary).at(-1), ['Accepted=True Accepted', 'ResolvedRefs=True ResolvedRefs']);
  const now = routeStatusOf({ raw: route('r', []), compiled: undefined, serviceExists: () => true, previous: heard.at(-1), now: '2099-01-01T00:00:00Z' });
  assert.equal(now.parents[0]!.conditions[0]!.lastTransitionTime, heard.at(-1)!.parents[0]!.conditions[0]!.lastTransitionTime, 'Accepted stayed True');
  assert.ok(sameConditions(heard.at(-1), { ...heard.at(-1)!, parents: heard.at(-1)!.parents.map((p) => ({ ...p, conditions: p.conditions.map((c) => ({ ...c, lastTransitionTime: 'x' })) })) }));
});

test('in Kubernetes the status is written with a status PATCH and read back, BackendNotFound and RefNotPermitted included; other controllers\' entries stay', async (t) => {
  const fake = await FakeApiServer.start();
  const source = new KubernetesSource(fake.kubeConfig(), { timing: FAST });
  t.after(async () => {
    await source.stop();
    await fake.stop();
  });
  const gateway: RouteParentStatus = { parentRef: { group: '', kind: 'Service', namespace: 'shop', name: 'web' }, controllerName: 'example.com/gateway', conditions: [] };
  fake.apply(svc('web') as unknown as FakeObject);
  fake.apply({ ...route('missing', [{ backendRefs: [{ name: 'gone', port: 80 }] }]), status: { parents: [gateway] } } as unknown as FakeObject);
  fake.apply(route('cross', [{ backendRefs: [{ name: 'web', namespace: 'other', port: 80 }] }]) as unknown as FakeObject);
  fake.apply(route('rpc', [{ backendRefs: [{ name: 'web', port: 80 }] }], { kind: 'GRPCRoute' }) as unknown as FakeObject);
  const model = new MeshModel();
  const writer = new KubernetesRouteStatusWriter(new KubeApi(fake.kubeConfig()));
  model.onRouteStatus((s) => writer.write(s));
  await source.start(model);
  const stored = (kind: string, name: string) => fake.get(kind, 'shop', name)?.status as { parents?: RouteParentStatus[] } | undefined;
  const written = (kind: string, name: string) => (summary(stored(kind, name)).length ? stored(kind, name) : undefined);
  assert.deepEqual(summary(await until('status of missing', () => written('HTTPRoute', 'missing'))), ['Accepted=True Accepted', 'ResolvedRefs=False BackendNotFound']);
  assert.deepEqual(summary(await until('status of cross', () => written('HTTPRoute', 'cross'))), ['Accepted=True Accepted', 'ResolvedRefs=False RefNotPermitted']);
  assert.deepEqual(summary(await until('status of rpc', () => written('GRPCRoute', 'rpc'))), ['Accepted=True Accepted', 'ResolvedRefs=True ResolvedRefs']);
  assert.deepEqual(stored('HTTPRoute', 'missing')!.parents!.map((p) => p.controllerName), ['example.com/gateway', 'nodemesh.io/mesh'], 'the other controller\'s entry is kept');
  assert.equal(fake.requests({ method: 'PATCH', path: '/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/missing/status' }), 1);
  // A new generation of the spec: observedGeneration follows, and the fix shows.
  const before = fake.get('HTTPRoute', 'shop', 'missing')!;
  fake.apply({ ...before, spec: { ...(before.spec as object), rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] } });
  const fixed = await until('the fixed status', () => {
    const s = stored('HTTPRoute', 'missing');
    return summary(s).includes('ResolvedRefs=True ResolvedRefs') ? s : undefined;
  });
  const ours = fixed.parents!.find((p) => p.controllerName === CONTROLLER_NAME)!;
  assert.deepEqual(ours.conditions.map((c) => c.observedGeneration), [2, 2]);
  await writer.idle();
  await sleep(100);
  // Our own write comes back through the watch: it must not be written again.
  assert.equal(fake.requests({ method: 'PATCH', path: '/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/missing/status' }), 2);
});

test('in file mode the control plane answers the routes\' status and the refused objects on its status endpoint, read-only', async (t) => {
  const model = new MeshModel();
  model.upsert(svc('web'), ORIGIN);
  model.upsert(route('missing', [{ backendRefs: [{ name: 'gone', port: 80 }] }]), ORIGIN);
  model.upsert(route('bad', [{ backendRefs: [{ name: 'web', port: 80, weight: 'heavy' }] }]), ORIGIN);
  model.synced();
  await model.whenSynced();
  const { server, address } = await serveStatus('127.0.0.1:0', model);
  t.after(() => server.close());
  const routes = await (await fetch(`http://${address}/routes`)).json() as { routes: RouteStatus[] };
  assert.deepEqual(routes.routes.map((r) => [r.name, summary(r)]).sort(), [['bad', ['Accepted=False UnsupportedValue']], ['missing', ['Accepted=True Accepted', 'ResolvedRefs=False BackendNotFound']]]);
  const rejected = await (await fetch(`http://${address}/rejected`)).json() as { rejected: { object: string; field: string }[] };
  assert.deepEqual(rejected.rejected.map((r) => [r.object, r.field]), [['HTTPRoute shop/bad', 'spec.rules[0].backendRefs[0].weight']]);
  assert.equal((await fetch(`http://${address}/routes`, { method: 'POST' })).status, 405);
  assert.equal((await fetch(`http://${address}/nope`)).status, 404);
  await assert.rejects(serveStatus('no-port', model), /expected host:port/);
});
