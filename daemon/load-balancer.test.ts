import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Endpoint, Resource, Service, Workload } from '../core/types.ts';
import { ConfigStore } from './config-store.ts';
import { LoadBalancer } from './load-balancer.ts';
import { resolveDestination } from './destination.ts';

const ep = (ip: string, ready = true, workloadUid = ''): Endpoint => ({ ip, ready, workloadUid });

test('choose: undefined without ready endpoints, the only ready one otherwise', () => {
  const lb = new LoadBalancer();
  assert.equal(lb.choose([]), undefined);
  assert.equal(lb.choose([ep('10.0.0.1', false)]), undefined);
  assert.equal(lb.choose([ep('10.0.0.1', false), ep('10.0.0.2')])?.ip, '10.0.0.2');
});

test('choose: of the two sampled endpoints the one with fewer active connections wins', () => {
  // random() = 0 samples index 0 first, then index 1 (the first of the others).
  const lb = new LoadBalancer(() => 0);
  const eps = [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')];
  assert.equal(lb.choose(eps)?.ip, '10.0.0.1');
  const release = lb.track('10.0.0.1');
  assert.equal(lb.choose(eps)?.ip, '10.0.0.2');
  release();
  release();
  assert.equal(lb.active('10.0.0.1'), 0);
  assert.equal(lb.choose(eps)?.ip, '10.0.0.1');
});

test('choose: never samples the same endpoint twice and spreads load evenly', () => {
  const lb = new LoadBalancer();
  const eps = [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3'), ep('10.0.0.4', false)];
  const held: (() => void)[] = [];
  for (let i = 0; i < 300; i++) held.push(lb.track(lb.choose(eps)!.ip));
  assert.equal(lb.active('10.0.0.4'), 0);
  for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) {
    // Least-active of two keeps every endpoint near 100 (plain random would drift further).
    assert.ok(Math.abs(lb.active(ip) - 100) <= 3, `${ip}: ${lb.active(ip)}`);
  }
  held.forEach((r) => r());
  assert.equal(lb.active('10.0.0.1'), 0);
});

function workload(uid: string, ip: string, namedPorts: Record<string, number> = {}): Workload {
  return {
    uid, namespace: 'shop', name: uid, workloadName: 'cart', serviceAccount: 'cart', node: 'n1', ip,
    labels: {}, enrolled: true, mtlsMode: 'permissive', namedPorts,
  };
}

function storeWith(services: Service[], workloads: Workload[]): ConfigStore {
  const store = new ConfigStore('n1');
  const upserts: Resource[] = [
    ...workloads.map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
    ...services.map((s): Resource => ({ kind: 'service', key: `${s.namespace}/${s.name}`, version: 1, service: s })),
  ];
  store.apply({ epoch: 't', version: 1, snapshot: true, upserts, removals: [] });
  return store;
}

test('resolveDestination: VIP -> endpoint with numeric or named target port; workload IP; passthrough', () => {
  const svc: Service = {
    namespace: 'shop', name: 'cart', vips: ['10.96.0.10'], opaquePorts: [],
    ports: [
      { name: 'http', port: 80, targetPort: 8080, targetPortName: '', appProtocol: '' },
      { name: 'grpc', port: 90, targetPort: 0, targetPortName: 'grpc', appProtocol: '' },
      { name: 'same', port: 100, targetPort: 0, targetPortName: '', appProtocol: '' },
    ],
    endpoints: [ep('10.0.0.1', true, 'a'), ep('10.0.0.2', false, 'b'), ep('10.0.0.3', true, '')],
  };
  const store = storeWith([svc], [workload('a', '10.0.0.1', { grpc: 9090 }), workload('b', '10.0.0.2')]);
  const lb = new LoadBalancer(() => 0);

  const http = resolveDestination(store, lb, '10.96.0.10', 80);
  assert.equal(http.kind, 'workload');
  assert.deepEqual(http.kind === 'workload' && [http.workload.uid, http.ip, http.port, http.service?.name], ['a', '10.0.0.1', 8080, 'cart']);

  // The endpoint without a workload cannot resolve the named port: only "a" qualifies.
  const grpc = resolveDestination(store, lb, '10.96.0.10', 90);
  assert.deepEqual(grpc.kind === 'workload' && [grpc.ip, grpc.port], ['10.0.0.1', 9090]);

  const release = lb.track('10.0.0.1');
  const other = resolveDestination(store, lb, '10.96.0.10', 100);
  release();
  assert.deepEqual(other, { kind: 'passthrough', ip: '10.0.0.3', port: 100, service: svc });

  const missing = resolveDestination(store, lb, '10.96.0.10', 81);
  assert.equal(missing.kind, 'unavailable');
  assert.match(missing.kind === 'unavailable' ? missing.reason : '', /shop\/cart has no port 81/);

  const direct = resolveDestination(store, lb, '10.0.0.2', 7000);
  assert.deepEqual(direct.kind === 'workload' && [direct.workload.uid, direct.port, direct.service], ['b', 7000, undefined]);

  assert.deepEqual(resolveDestination(store, lb, '1.1.1.1', 443), { kind: 'passthrough', ip: '1.1.1.1', port: 443 });
});

test('resolveDestination: a Service without ready endpoints is unavailable', () => {
  const svc: Service = {
    namespace: 'shop', name: 'down', vips: ['10.96.0.11'], opaquePorts: [],
    ports: [{ name: 'http', port: 80, targetPort: 8080, targetPortName: '', appProtocol: '' }],
    endpoints: [ep('10.0.0.1', false)],
  };
  const d = resolveDestination(storeWith([svc], []), new LoadBalancer(), '10.96.0.11', 80);
  assert.equal(d.kind, 'unavailable');
  assert.match(d.kind === 'unavailable' ? d.reason : '', /no ready endpoint/);
});
