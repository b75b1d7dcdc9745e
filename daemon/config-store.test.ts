import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuthorizationPolicy, Resource, Service, Workload } from '../core/types.ts';
import { ConfigStore } from './config-store.ts';

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

test('config store: a workload\'s identity follows a change of trust domain (identities are kept per workload)', () => {
  const store = new ConfigStore('n1');
  const resource = workload('cart', '10.0.0.3', 'n1');
  store.apply({ epoch: 'e', version: 1, snapshot: true, upserts: [resource], removals: [] });
  const w = store.workloadByIp('10.0.0.3')!;
  assert.equal(store.identityOf(w), 'spiffe://cluster.local/ns/shop/sa/cart');
  assert.equal(store.identityOf(w), store.identityOf(w));
  store.apply({ epoch: 'e', version: 2, snapshot: false, upserts: [{ kind: 'settings', key: 'mesh', version: 2, settings: { trustDomain: 'prod.example', rootNamespace: 'nodemesh-system' } }], removals: [] });
  assert.equal(store.identityOf(w), 'spiffe://prod.example/ns/shop/sa/cart');
});
