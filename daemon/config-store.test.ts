import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuthorizationPolicy, Resource, Service, Workload } from '../core/types.ts';
import { ConfigStore } from './config-store.ts';
import { LastKnownGood, readLastKnownGood } from './last-known-good.ts';

function workload(name: string, ip: string, node = 'node-1', labels: Record<string, string> = { app: name }): Resource {
  const w: Workload = { uid: `uid-${name}`, namespace: 'shop', name, workloadName: name, serviceAccount: name, node, ip, labels, enrolled: true, mtlsMode: 'permissive', namedPorts: {} };
  return { kind: 'workload', key: w.uid, version: 1, workload: w };
}

function service(name: string, vip: string, endpointIps: string[]): Resource {
  const s: Service = {
    namespace: 'shop', name, vips: [vip], opaquePorts: [], ports: [{ name: 'http', port: 80, targetPort: 8080, targetPortName: '', appProtocol: '' }],
    endpoints: endpointIps.map((ip) => ({ workloadUid: '', ip, ready: true })),
  };
  return { kind: 'service', key: `shop/${name}`, version: 1, service: s };
}

function policy(namespace: string, name: string, selector: Record<string, string> | null): Resource {
  const p: AuthorizationPolicy = { namespace, name, selector, action: 'DENY', rules: [] };
  return { kind: 'policy', key: `${namespace}/${name}`, version: 1, policy: p };
}

test('config store: indexes follow deltas: IP changes, removals, and a snapshot replacing everything', () => {
  const store = new ConfigStore('node-1');
  store.apply({ epoch: 'e', version: 1, snapshot: true, removals: [], upserts: [workload('web', '10.0.0.1'), workload('db', '10.0.0.2', 'node-2'), service('web', '10.96.0.1', ['10.0.0.1'])] });
  assert.equal(store.workloadByIp('10.0.0.1')?.name, 'web');
  assert.deepEqual(store.localWorkloads().map((w) => w.name), ['web']);
  assert.equal(store.serviceByVip('10.96.0.1')?.name, 'web');
  assert.deepEqual(store.servicesWithEndpoint('10.0.0.1').map((s) => s.name), ['web']);

  // web moves to a new IP and the service follows it; db goes away.
  store.apply({ epoch: 'e', version: 2, snapshot: false, upserts: [workload('web', '10.0.0.9'), service('web', '10.96.0.1', ['10.0.0.9'])], removals: [{ kind: 'workload', key: 'uid-db' }] });
  assert.equal(store.workloadByIp('10.0.0.1'), undefined);
  assert.equal(store.workloadByIp('10.0.0.9')?.name, 'web');
  assert.equal(store.workloadByIp('10.0.0.2'), undefined);
  assert.deepEqual(store.servicesWithEndpoint('10.0.0.1'), []);
  assert.deepEqual(store.servicesWithEndpoint('10.0.0.9').map((s) => s.name), ['web']);
  assert.equal(store.services().length, 1, 'an upsert replaces, it does not add');

  // A recycled IP: a new pod takes 10.0.0.9 before the old one's removal arrives.
  store.apply({ epoch: 'e', version: 3, snapshot: false, upserts: [workload('api', '10.0.0.9')], removals: [] });
  store.apply({ epoch: 'e', version: 4, snapshot: false, upserts: [], removals: [{ kind: 'workload', key: 'uid-web' }] });
  assert.equal(store.workloadByIp('10.0.0.9')?.name, 'api');

  store.apply({ epoch: 'f', version: 1, snapshot: true, removals: [], upserts: [workload('cart', '10.0.0.5')] });
  assert.deepEqual(store.workloads().map((w) => w.name), ['cart']);
  assert.equal(store.serviceByVip('10.96.0.1'), undefined);
  assert.equal(store.epoch, 'f');
});

test('config store: policies apply by selector, from the workload namespace and the root namespace', () => {
  const store = new ConfigStore('node-1');
  store.apply({
    epoch: 'e', version: 1, snapshot: true, removals: [],
    upserts: [
      workload('web', '10.0.0.1', 'node-1', { app: 'web', tier: 'front' }),
      policy('shop', 'all', null), policy('shop', 'front', { tier: 'front' }), policy('shop', 'back', { tier: 'back' }),
      policy('nodemesh-system', 'mesh-wide', null), policy('other', 'elsewhere', null),
    ],
  });
  const names = () => store.policiesFor(store.workloadByIp('10.0.0.1')!).map((p) => `${p.namespace}/${p.name}`).sort();
  assert.deepEqual(names(), ['nodemesh-system/mesh-wide', 'shop/all', 'shop/front']);
  store.apply({ epoch: 'e', version: 2, snapshot: false, upserts: [], removals: [{ kind: 'policy', key: 'shop/front' }] });
  assert.deepEqual(names(), ['nodemesh-system/mesh-wide', 'shop/all']);
});

test('config store: the last-known-good config survives a restart; bursts of updates cost one write', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'state', 'config.jsonl');
  const store = new ConfigStore('node-1');
  const lkg = new LastKnownGood(store, path, 50);
  for (let v = 1; v <= 20; v++) {
    store.apply({ epoch: 'e', version: v, snapshot: v === 1, removals: [], upserts: [workload(`w${v}`, `10.0.1.${v}`)] });
    lkg.schedule();
  }
  assert.equal(existsSync(path), false, 'nothing is written synchronously');
  await lkg.flush();
  const restarted = new ConfigStore('node-1');
  restarted.restore(readLastKnownGood(path)!);
  assert.equal(restarted.version, 20);
  assert.equal(restarted.workloads().length, 20);
  assert.equal(restarted.workloadByIp('10.0.1.7')?.name, 'w7');
  assert.equal(restarted.synced, true);
  assert.equal(readLastKnownGood(join(dir, 'missing.jsonl')), undefined);
});

test('config store: a damaged last-known-good file counts as none (a partial mesh could lack a deny)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.jsonl');
  const store = new ConfigStore('node-1');
  store.apply({ epoch: 'e', version: 3, snapshot: true, removals: [], upserts: [1, 2, 3].map((i) => workload(`w${i}`, `10.0.1.${i}`)) });
  const lkg = new LastKnownGood(store, path, 0);
  lkg.schedule();
  await lkg.flush();
  const whole = readFileSync(path, 'utf8').split('\n');
  assert.equal(whole.length, 5, 'a header, three resources, and the final newline');
  assert.equal(readLastKnownGood(path)?.resources.length, 3);

  writeFileSync(path, whole.slice(0, 3).join('\n') + '\n');
  assert.equal(readLastKnownGood(path), undefined, 'a truncated file');
  writeFileSync(path, [whole[0], whole[1], '{"kind":', whole[3]].join('\n') + '\n');
  assert.equal(readLastKnownGood(path), undefined, 'a broken line');
  writeFileSync(path, '{"epoch":');
  assert.equal(readLastKnownGood(path), undefined, 'a broken header');
});
