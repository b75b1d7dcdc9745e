import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { ConfigStore } from './config-store.ts';
import type { Resource, Service, Workload } from '../core/types.ts';
import { serviceServing } from './destination.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { createMetrics } from './metrics.ts';

const server: Workload = {
  uid: 'u-a', namespace: 'demo', name: 'server-a', workloadName: 'server', serviceAccount: 'server', node: 'node-2',
  ip: '10.244.2.10', labels: { app: 'server' }, enrolled: true, mtlsMode: 'permissive', namedPorts: { admin: 7001 },
};
const echo: Service = {
  namespace: 'demo', name: 'server', vips: ['10.96.0.10'], opaquePorts: [],
  ports: [{ name: 'tcp', port: 80, targetPort: 7000, targetPortName: '', appProtocol: '' }],
  endpoints: [{ workloadUid: server.uid, ip: server.ip, ready: true }],
};
const admin: Service = { ...echo, name: 'server-admin', vips: ['10.96.0.12'], ports: [{ name: 'admin', port: 9000, targetPort: 0, targetPortName: 'admin', appProtocol: '' }] };

function store(): ConfigStore {
  const s = new ConfigStore('node-2');
  const upserts: Resource[] = [
    { kind: 'workload', key: server.uid, version: 1, workload: server },
    { kind: 'service', key: 'demo/server', version: 1, service: echo },
    { kind: 'service', key: 'demo/server-admin', version: 1, service: admin },
  ];
  s.apply({ epoch: 'e', version: 1, snapshot: true, upserts, removals: [] });
  return s;
}

test('serviceServing: the Service that has the workload as an endpoint with that target port (numeric or named)', () => {
  const config = store();
  assert.equal(serviceServing(config, server, 7000)?.name, 'server');
  assert.equal(serviceServing(config, server, 7001)?.name, 'server-admin');
  assert.equal(serviceServing(config, server, 8080), undefined);
});

test('regression: destination-side connections report destination_service, though the tunnel does not carry it', async () => {
  const config = store();
  const registry = new Registry();
  const tracker = new ConnectionTracker(createMetrics(registry), (w, port) => serviceServing(config, w, port));
  tracker.open({
    listener: 'inbound', reporter: 'destination', sourceIp: '10.244.1.10', sourcePrincipal: 'spiffe://cluster.local/ns/demo/sa/client',
    destinationIp: server.ip, destinationPort: 7000, destinationWorkload: server, destinationPrincipal: null, security: 'mutual_tls',
    bytes: () => ({ received: 0, sent: 0 }), destroy: () => {},
  }).finish();
  const text = await registry.metrics();
  assert.match(text, /nodemesh_tcp_connections_opened_total\{[^}]*destination_service="server\.demo\.svc\.cluster\.local"[^}]*\} 1/);
});
