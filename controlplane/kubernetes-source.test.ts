import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeObject, SourceEvents } from './source.ts';
import { KubernetesSource } from './kubernetes-source.ts';
import { FakeApiServer } from './testdata/fake-api-server.ts';
import type { FakeObject } from './testdata/fake-api-server.ts';

const FAST = { minRetryMs: 20, maxRetryMs: 200, absentRetryMs: 50 };

class Recorder implements SourceEvents {
  upserts: KubeObject[] = [];
  removals: string[] = [];
  invalids: { object: string; error: Error }[] = [];
  syncs = 0;
  upsert(obj: KubeObject): void {
    this.upserts.push(obj);
  }
  remove(kind: string, namespace: string, name: string): void {
    this.removals.push(`${kind} ${namespace}/${name}`);
  }
  invalid(_origin: string, object: string, error: Error): void {
    this.invalids.push({ object, error });
  }
  reread(): void {}
  synced(): void {
    this.syncs++;
  }
  names(kind: string): string[] {
    return this.upserts.filter((o) => o.kind === kind).map((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`);
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const KINDS = ['Namespace', 'Pod', 'Service', 'EndpointSlice', 'HTTPRoute', 'AuthorizationPolicy'];

/** Starts the fake and a source on it; returns once synced and every kind but `unwatched` is watched. */
async function setup(t: TestContext, seed: (fake: FakeApiServer) => void, unwatched: string[] = []): Promise<{ fake: FakeApiServer; events: Recorder }> {
  const fake = await FakeApiServer.start();
  let source: KubernetesSource | undefined;
  t.after(async () => {
    await source?.stop();
    await fake.stop();
  });
  seed(fake);
  source = new KubernetesSource(fake.kubeConfig(), { timing: FAST });
  const events = new Recorder();
  await source.start(events);
  await until('synced', () => events.syncs === 1);
  for (const kind of KINDS.filter((k) => !unwatched.includes(k))) {
    await until(`a watch on ${kind}`, () => fake.openWatches(kind) === 1);
  }
  return { fake, events };
}

const pod = (name: string, extra: Record<string, unknown> = {}): FakeObject => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' },
  spec: { nodeName: 'node-a', serviceAccountName: 'web', containers: [{ name: 'app', image: 'app' }] },
  status: { podIP: '10.0.0.5' }, ...extra,
});

function seedEveryKind(fake: FakeApiServer): void {
  fake.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } } });
  fake.apply(pod('web-1'));
  fake.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } });
  fake.apply({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.0.0.5'] }] });
  fake.apply({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web-canary', namespace: 'shop' }, spec: { parentRefs: [{ kind: 'Service', group: '', name: 'web' }] } });
  fake.apply({ apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'allow-frontend', namespace: 'shop' }, spec: { action: 'ALLOW' } });
}

test('fake API server: the initial list delivers every kind with apiVersion and kind filled in, then synced', async (t) => {
  const { events } = await setup(t, seedEveryKind);
  assert.deepEqual(events.upserts.map((o) => `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort(), [
    'discovery.k8s.io/v1 EndpointSlice shop/web-abc',
    'gateway.networking.k8s.io/v1 HTTPRoute shop/web-canary',
    'security.nodemesh.io/v1alpha1 AuthorizationPolicy shop/allow-frontend',
    'v1 Namespace /shop',
    'v1 Pod shop/web-1',
    'v1 Service shop/web',
  ]);
  const delivered = events.upserts.find((o) => o.kind === 'Pod')!;
  assert.equal((delivered.status as { podIP: string }).podIP, '10.0.0.5');
  assert.equal(typeof delivered.metadata.creationTimestamp, 'string', 'timestamps stay strings, as in YAML');
  assert.equal(events.syncs, 1);
  assert.deepEqual(events.invalids, []);
});

test('fake API server: watch events arrive as upserts and removals', async (t) => {
  const { fake, events } = await setup(t, seedEveryKind);
  const before = events.upserts.length;
  fake.apply(pod('web-2'));
  await until('web-2 added', () => events.names('Pod').includes('shop/web-2'));
  fake.apply(pod('web-2', { metadata: { name: 'web-2', namespace: 'shop', labels: { version: 'v2' } } }));
  await until('web-2 modified', () => events.upserts.some((o) => o.metadata.name === 'web-2' && o.metadata.labels?.version === 'v2'));
  fake.delete('Pod', 'shop', 'web-2');
  await until('web-2 removed', () => events.removals.includes('Pod shop/web-2'));
  fake.delete('Namespace', '', 'shop');
  await until('namespace removed', () => events.removals.includes('Namespace /shop'));
  assert.equal(events.upserts.length, before + 2);
  assert.equal(fake.requests({ path: '/api/v1/pods', watch: false }), 1, 'no relist was needed');
});

test('fake API server: 410 Gone makes the source list again and deliver what it missed', async (t) => {
  const { fake, events } = await setup(t, seedEveryKind);
  fake.apply(pod('web-3'));
  await until('web-3 added', () => events.names('Pod').includes('shop/web-3'));
  // While the watch is down the pod goes away and the history is compacted:
  // resuming is impossible, only a relist can show the deletion.
  fake.dropWatches();
  fake.delete('Pod', 'shop', 'web-3');
  fake.apply(pod('web-4'));
  fake.compact();
  await until('web-3 removed after relist', () => events.removals.includes('Pod shop/web-3'));
  await until('web-4 added after relist', () => events.names('Pod').includes('shop/web-4'));
  assert.equal(fake.requests({ path: '/api/v1/pods', watch: false }), 2, 'listed once at start and once after 410');
  assert.equal(events.names('Pod').filter((n) => n === 'shop/web-1').length, 1, 'an unchanged object is not delivered again by the relist');
  assert.equal(events.syncs, 1);
});

test('fake API server: a dropped watch reconnects and resumes from the last resourceVersion', async (t) => {
  const { fake, events } = await setup(t, seedEveryKind);
  const watchesBefore = fake.requests({ path: '/api/v1/services', watch: true });
  fake.dropWatches();
  fake.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'cart', namespace: 'shop' }, spec: { clusterIP: '10.96.0.11', ports: [{ port: 8080 }] } });
  await until('cart delivered after reconnect', () => events.names('Service').includes('shop/cart'));
  assert.ok(fake.requests({ path: '/api/v1/services', watch: true }) > watchesBefore, 'a new watch was opened');
  assert.equal(fake.requests({ path: '/api/v1/services', watch: false }), 1, 'resumed without listing again');
  await until('watch open again', () => fake.openWatches('Service') === 1);
});

test('fake API server: a malformed object is rejected alone, naming kind, namespace and name', async (t) => {
  const { fake, events } = await setup(t, (f) => {
    seedEveryKind(f);
    f.applyMalformed('Pod', { metadata: { namespace: 'shop' }, spec: {} });
  });
  assert.equal(events.invalids.length, 1);
  assert.equal(events.invalids[0]!.object, 'Pod shop/<no name>');
  assert.match(events.invalids[0]!.error.message, /Pod shop\/<no name>: metadata\.name: missing/);
  assert.ok(events.names('Pod').includes('shop/web-1'), 'the valid pod is still delivered');
  fake.applyMalformed('Service', { metadata: { name: 'no-namespace' } });
  fake.apply(pod('web-5'));
  await until('web-5 after the bad service', () => events.names('Pod').includes('shop/web-5'));
  await until('bad service reported', () => events.invalids.length === 2);
  assert.match(events.invalids[1]!.error.message, /^Service no-namespace: metadata\.namespace: missing/);
});

test('fake API server: an absent HTTPRoute CRD is tolerated, logged once, and picked up when installed', async (t) => {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(String(chunk));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  t.after(() => {
    process.stderr.write = write;
  });
  const { fake, events } = await setup(t, (f) => {
    seedEveryKind(f);
    f.setCrdInstalled('HTTPRoute', false);
  }, ['HTTPRoute']);
  assert.deepEqual(events.names('HTTPRoute'), []);
  assert.deepEqual(events.names('Pod'), ['shop/web-1'], 'other kinds are unaffected');
  const listsBefore = fake.requests({ path: '/apis/gateway.networking.k8s.io/v1/httproutes' });
  await until('a few retries', () => fake.requests({ path: '/apis/gateway.networking.k8s.io/v1/httproutes' }) >= listsBefore + 3);
  assert.equal(lines.filter((l) => l.includes('HTTPRoute CRD not installed; routing disabled')).length, 1, 'logged once, not per retry');
  fake.setCrdInstalled('HTTPRoute', true);
  await until('route delivered once the CRD exists', () => events.names('HTTPRoute').includes('shop/web-canary'));
  await until('route watched', () => fake.openWatches('HTTPRoute') === 1);
  fake.setCrdInstalled('HTTPRoute', false);
  fake.dropWatches();
  await until('routes removed when the CRD goes away', () => events.removals.includes('HTTPRoute shop/web-canary'));
  assert.equal(events.syncs, 1);
});
