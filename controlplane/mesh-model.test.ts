import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { MeshModel } from './mesh-model.ts';
import type { KubeObject } from './source.ts';
import type { ConfigUpdate, Resource } from '../core/types.ts';

const ORIGIN = 'test.yaml';

function namespace(name: string, annotations: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, annotations } };
}

function pod(name: string, ip: string, opts: { ns?: string; labels?: Record<string, string>; node?: string; sa?: string; ready?: boolean; annotations?: Record<string, string> } = {}): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: opts.ns ?? 'demo', uid: `uid-${opts.ns ?? 'demo'}-${name}`, labels: opts.labels ?? { app: 'server' }, annotations: opts.annotations },
    spec: { nodeName: opts.node ?? 'node-2', serviceAccountName: opts.sa ?? 'server', containers: [] },
    status: { podIP: ip, conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }] },
  };
}

function service(name: string, selector: Record<string, string> | undefined, ip: string, ns = 'demo'): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: ip, selector, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } };
}

function watch(model: MeshModel): ConfigUpdate[] {
  const deltas: ConfigUpdate[] = [];
  model.subscribe((d) => deltas.push(d));
  return deltas;
}

function find<K extends Resource['kind']>(resources: Resource[], kind: K, key: string): Extract<Resource, { kind: K }> | undefined {
  return resources.find((r) => r.kind === kind && r.key === key) as Extract<Resource, { kind: K }> | undefined;
}

test('enrollment follows the namespace and the pod annotation overrides it, live', async () => {
  const model = new MeshModel();
  model.upsert(namespace('demo'), ORIGIN);
  model.upsert(pod('a', '10.0.0.1'), ORIGIN);
  model.upsert(pod('b', '10.0.0.2', { annotations: { 'nodemesh.io/mesh': 'disabled' } }), ORIGIN);
  model.synced();
  await model.whenSynced();
  const snap = model.snapshotFor();
  assert.equal(find(snap.upserts, 'workload', 'uid-demo-a')!.workload.enrolled, false);
  assert.deepEqual(find(snap.upserts, 'settings', 'mesh')!.settings, { trustDomain: 'cluster.local', rootNamespace: 'nodemesh-system' });

  const deltas = watch(model);
  model.upsert(namespace('demo', { 'nodemesh.io/mesh': 'enabled', 'nodemesh.io/mtls-mode': 'strict' }), ORIGIN);
  await tick();
  assert.equal(deltas.length, 1);
  assert.deepEqual(deltas[0]!.upserts.map((r) => r.key).sort(), ['uid-demo-a', 'uid-demo-b'], 'both pods: the mTLS mode changed for both');
  const b = find(deltas[0]!.upserts, 'workload', 'uid-demo-b')!;
  assert.equal(b.workload.enrolled, false, 'the pod annotation opts out of the enrolled namespace');
  assert.equal(b.workload.mtlsMode, 'strict');
  const a = find(deltas[0]!.upserts, 'workload', 'uid-demo-a')!;
  assert.equal(a.workload.enrolled, true);
  assert.equal(a.workload.mtlsMode, 'strict');
  assert.equal(a.version, deltas[0]!.version);

  model.upsert(pod('a', '10.0.0.1', { annotations: { 'nodemesh.io/mesh': 'disabled' } }), ORIGIN);
  await tick();
  assert.equal(find(deltas[1]!.upserts, 'workload', 'uid-demo-a')!.workload.enrolled, false);

  model.remove('Namespace', '', 'demo');
  model.upsert(pod('a', '10.0.0.1'), ORIGIN);
  await tick();
  assert.equal(model.workloadByUid('uid-demo-a')!.enrolled, false);
  assert.equal(model.workloadByUid('uid-demo-a')!.mtlsMode, 'permissive');
});

test('service endpoints come from the selector, or from EndpointSlices when there are any', async () => {
  const model = new MeshModel();
  model.upsert(service('server', { app: 'server' }, '10.96.0.10'), ORIGIN);
  model.upsert(pod('a', '10.0.0.1'), ORIGIN);
  model.upsert(pod('b', '10.0.0.2', { ready: false }), ORIGIN);
  model.upsert(pod('c', '10.0.0.3', { labels: { app: 'other' } }), ORIGIN);
  model.upsert(pod('d', '10.0.0.4', { ns: 'other' }), ORIGIN);
  model.synced();
  await model.whenSynced();
  const endpoints = () => find(model.resources(), 'service', 'demo/server')!.service.endpoints;
  assert.deepEqual(endpoints(), [
    { workloadUid: 'uid-demo-a', ip: '10.0.0.1', ready: true },
    { workloadUid: 'uid-demo-b', ip: '10.0.0.2', ready: false },
  ]);

  const deltas = watch(model);
  model.upsert({
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4',
    metadata: { name: 'server-x1', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'server' } },
    endpoints: [{ addresses: ['10.0.0.3'], conditions: { ready: true } }, { addresses: ['10.9.9.9'], conditions: { ready: false } }],
  }, ORIGIN);
  await tick();
  assert.deepEqual(endpoints(), [
    { workloadUid: 'uid-demo-c', ip: '10.0.0.3', ready: true },
    { workloadUid: '', ip: '10.9.9.9', ready: false },
  ]);
  assert.deepEqual(deltas[0]!.upserts.map((r) => `${r.kind}:${r.key}`), ['service:demo/server']);

  model.remove('EndpointSlice', 'demo', 'server-x1');
  model.remove('Pod', 'demo', 'a');
  await tick();
  assert.deepEqual(endpoints(), [{ workloadUid: 'uid-demo-b', ip: '10.0.0.2', ready: false }]);
  assert.deepEqual(deltas[1]!.removals, [{ kind: 'workload', key: 'uid-demo-a' }]);
});

test('deltas are versioned, and a node resumes from history until it is too old or from another epoch', async () => {
  const model = new MeshModel({ historyLimit: 3 });
  model.synced();
  await model.whenSynced();
  const start = model.version;
  const deltas = watch(model);
  for (let i = 1; i <= 5; i++) {
    model.upsert(pod(`p${i}`, `10.0.1.${i}`), ORIGIN);
    await tick();
  }
  assert.deepEqual(deltas.map((d) => d.version), [start + 1, start + 2, start + 3, start + 4, start + 5]);
  assert.ok(deltas.every((d) => !d.snapshot && d.epoch === model.epoch));
  assert.deepEqual(model.deltasSince(model.epoch, start + 2)!.map((d) => d.version), [start + 3, start + 4, start + 5]);
  assert.deepEqual(model.deltasSince(model.epoch, start + 5), []);
  assert.equal(model.deltasSince(model.epoch, start + 1), null, 'older than the history');
  assert.equal(model.deltasSince('another-epoch', start + 4), null);
  assert.equal(model.deltasSince(model.epoch, start + 9), null, 'from the future');
  assert.notEqual(new MeshModel().epoch, model.epoch);
  const snap = model.snapshotFor();
  assert.equal(snap.version, start + 5);
  assert.equal(snap.upserts.filter((r) => r.kind === 'workload').length, 5);
});

test('a bad object is rejected alone, the last accepted version stays, a fix clears the rejection', async () => {
  const model = new MeshModel();
  const deny = (ports: unknown[]): KubeObject => ({
    apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'deny', namespace: 'demo' },
    spec: { action: 'DENY', rules: [{ to: [{ operation: { ports } }] }] },
  });
  model.upsert(deny(['7001']), 'policy.yaml');
  model.upsert(pod('a', '10.0.0.1'), 'pods.yaml');
  model.upsert(pod('dup', '10.0.0.1'), 'pods.yaml');
  model.invalid('broken.yaml', 'doc #2', new Error('missing kind'));
  model.synced();
  await model.whenSynced();
  assert.deepEqual(model.rejected().map((r) => [r.origin, r.object, r.field]), [
    ['pods.yaml', 'Pod demo/dup', 'status.podIP'],
    ['broken.yaml', 'doc #2', ''],
  ]);
  model.upsert(deny(['99999']), 'policy.yaml');
  await tick();
  assert.deepEqual(find(model.resources(), 'policy', 'demo/deny')!.policy.rules[0]!.to[0]!.ports, [7001], 'last accepted version kept');
  const rejectedPolicy = model.rejected().find((r) => r.object === 'AuthorizationPolicy demo/deny')!;
  assert.equal(rejectedPolicy.field, 'spec.rules[0].to[0].operation.ports[0]');
  assert.match(rejectedPolicy.reason, /between 1 and 65535/);
  assert.ok(model.workloadByIp('10.0.0.1'), 'other objects unaffected');

  model.upsert(deny(['7002']), 'policy.yaml');
  model.remove('Pod', 'demo', 'dup');
  model.upsert(namespace('demo'), 'broken.yaml');
  await tick();
  assert.deepEqual(model.rejected(), []);
  assert.deepEqual(find(model.resources(), 'policy', 'demo/deny')!.policy.rules[0]!.to[0]!.ports, [7002]);
});

test('routes mark backends of missing Services and update when the Service appears; node index', async () => {
  const model = new MeshModel();
  model.upsert({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'demo' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'server' }], rules: [{ backendRefs: [{ name: 'server-b', port: 80 }] }] },
  }, ORIGIN);
  model.upsert({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'gw-only', namespace: 'demo' },
    spec: { parentRefs: [{ name: 'gateway' }] },
  }, ORIGIN);
  model.upsert(pod('a', '10.0.0.1', { node: 'node-1' }), ORIGIN);
  model.upsert(pod('b', '10.0.0.2', { node: 'node-2' }), ORIGIN);
  model.synced();
  await model.whenSynced();
  assert.match(find(model.resources(), 'route', 'demo/r')!.route.rules[0]!.backendRefs[0]!.invalidReason, /BackendNotFound/);
  assert.equal(find(model.resources(), 'route', 'demo/gw-only'), undefined, 'a route with no Service parent is not sent');
  model.upsert(service('server-b', { app: 'b' }, '10.96.0.11'), ORIGIN);
  await tick();
  assert.equal(find(model.resources(), 'route', 'demo/r')!.route.rules[0]!.backendRefs[0]!.invalidReason, '');
  assert.deepEqual(model.workloadsOnNode('node-1').map((w) => w.name), ['a']);
  assert.deepEqual(model.workloadsOnNode('node-3'), []);
  assert.equal(model.workloadByIp('10.0.0.2')!.name, 'b');
});

test('a route whose regex cannot be matched in linear time is rejected alone; the other routes apply', async () => {
  const model = new MeshModel();
  const regexRoute = (name: string, value: string): KubeObject => ({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'demo' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'server' }], rules: [{ matches: [{ path: { type: 'RegularExpression', value } }] }] },
  });
  model.upsert(regexRoute('backref', '/(a+)\\1'), ORIGIN);
  model.upsert(regexRoute('fine', '/(a+)+'), ORIGIN);
  model.synced();
  await model.whenSynced();
  assert.deepEqual(model.rejected().map((r) => [r.object, r.field]), [['HTTPRoute demo/backref', 'spec.rules[0].matches[0].path.value']]);
  assert.match(model.rejected()[0]!.reason, /backreferences/);
  assert.equal(find(model.resources(), 'route', 'demo/backref'), undefined);
  assert.equal(find(model.resources(), 'route', 'demo/fine')!.route.rules[0]!.matches[0]!.path!.value, '/(a+)+');
});

test('one pod change among 10,000 pods and 1,000 services touches only that pod and its services', async () => {
  const model = new MeshModel();
  for (let s = 0; s < 1000; s++) model.upsert(service(`svc-${s}`, { app: `app-${s}` }, `10.96.${s >> 8}.${s & 255}`), ORIGIN);
  for (let p = 0; p < 10_000; p++) {
    model.upsert(pod(`pod-${p}`, `10.1.${p >> 8}.${p & 255}`, { labels: { app: `app-${p % 1000}`, tier: 'web' } }), ORIGIN);
  }
  const loadStart = performance.now();
  model.synced();
  await model.whenSynced();
  const loadMs = performance.now() - loadStart;
  assert.equal(find(model.resources(), 'service', 'demo/svc-7')!.service.endpoints.length, 10);

  const deltas = watch(model);
  const start = performance.now();
  model.upsert(pod('pod-7', '10.1.0.7', { labels: { app: 'app-8', tier: 'web' } }), ORIGIN);
  await new Promise<void>((resolve) => {
    const unsubscribe = model.subscribe(() => {
      unsubscribe();
      resolve();
    });
  });
  const ms = performance.now() - start;
  console.log(`initial flush of 10000 pods / 1000 services: ${loadMs.toFixed(1)} ms; one pod change -> delta: ${ms.toFixed(2)} ms`);
  assert.deepEqual(deltas[0]!.upserts.map((r) => `${r.kind}:${r.key}`).sort(), ['service:demo/svc-7', 'service:demo/svc-8', 'workload:uid-demo-pod-7']);
  assert.equal(find(deltas[0]!.upserts, 'service', 'demo/svc-7')!.service.endpoints.length, 9);
  assert.equal(find(deltas[0]!.upserts, 'service', 'demo/svc-8')!.service.endpoints.length, 11);
});

test('an unexpected exception converting one object rejects that object alone, with its origin and name', async () => {
  const model = new MeshModel();
  const boom = pod('boom', '10.0.0.9');
  // What no converter should do, done on purpose: the model must hold anyway.
  Object.defineProperty(boom.spec, 'nodeName', { get() { throw new Error('a converter bug'); } });
  model.upsert(namespace('demo'), ORIGIN);
  model.upsert(boom, 'boom.yaml');
  model.upsert(pod('a', '10.0.0.1'), ORIGIN);
  model.upsert({ apiVersion: 5, kind: 'Pod', metadata: { name: 'x' } } as never, 'envelope.yaml');
  model.upsert({ apiVersion: 'v1', kind: 'Pod', metadata: null } as never, 'envelope.yaml');
  model.synced();
  await model.whenSynced();
  assert.ok(model.workloadByIp('10.0.0.1'), 'the other objects apply');
  const rejected = model.rejected().map((r) => [r.origin, r.object, r.field]);
  assert.deepEqual(rejected, [['boom.yaml', 'Pod demo/boom', ''], ['envelope.yaml', 'Pod x', 'apiVersion'], ['envelope.yaml', 'Pod <no name>', 'metadata']]);
  assert.match(model.rejected()[0]!.reason, /could not be converted \(a converter bug\)/);
});

test('a pod that fails when its Namespace changes is rejected alone; the Namespace and its other pods apply', async () => {
  const model = new MeshModel();
  const flaky = pod('flaky', '10.0.0.9');
  let reads = 0;
  Object.defineProperty(flaky.spec, 'nodeName', { get() { if (++reads > 1) throw new Error('a converter bug'); return 'node-2'; } });
  model.upsert(flaky, ORIGIN);
  model.upsert(pod('a', '10.0.0.1'), ORIGIN);
  model.synced();
  await model.whenSynced();
  model.upsert(namespace('demo', { 'nodemesh.io/mesh': 'enabled' }), 'ns.yaml');
  await tick();
  assert.equal(model.workloadByIp('10.0.0.1')!.enrolled, true, 'the other pod was converted again');
  assert.deepEqual(model.rejected().map((r) => [r.origin, r.object]), [[ORIGIN, 'Pod demo/flaky']]);
});
