// The per-request plan's endpoints, without sockets: which endpoint an attempt
// gets and when one built for an earlier request of the connection is reused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { Service } from '../../core/types.ts';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { ConfigStore } from '../config-store.ts';
import { createMetrics } from '../metrics.ts';
import { Admission } from '../admission.ts';
import { HbonePool } from '../hbone-pool.ts';
import { PodDialer } from '../pod-dialer.ts';
import { MemoryCertSource, applyConfig, spiffe, workload } from '../testdata/mesh-fixture.ts';
import { PeakEwmaBalancer } from './peak-ewma.ts';
import { LocalReply } from './local-reply.ts';
import { RequestRouter } from './request-router.ts';
import type { Endpoint, HttpClientConnection } from './request-router.ts';

const client = workload('frontend', '10.0.2.2', 'n2', { namespace: 'web' });
const cart = workload('cart', '10.0.1.3', 'n1');

test('a connection\'s requests reuse the endpoint of the previous one while the pod, port and trust domain stay the same', async (t) => {
  const config = new ConfigStore('n2');
  const service: Service = {
    namespace: 'shop', name: 'cart', vips: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 8080, targetPortName: '', appProtocol: '' }],
    endpoints: [{ workloadUid: cart.uid, ip: cart.ip, ready: true }], opaquePorts: [],
  };
  applyConfig(config, { workloads: [client, cart], services: [service] });
  const pool = new HbonePool({ certs: await MemoryCertSource.issuing(await createMeshCa(), [spiffe(client)]), port: 15008 });
  t.after(() => pool.destroy());
  const router = new RequestRouter(config, pool, new Admission(config, createMetrics(new Registry())), new PeakEwmaBalancer(), new PodDialer());
  const conn: HttpClientConnection = { source: client, sourceIdentity: spiffe(client), sourceIp: client.ip, dstIp: '10.96.0.10', dstPort: 80 };
  const attempt = (c: HttpClientConnection): Endpoint => {
    const plan = router.plan({ method: 'GET', url: '/', headers: {} }, c);
    assert.ok(!(plan instanceof LocalReply));
    const endpoint = plan.next();
    assert.ok(!(endpoint instanceof LocalReply));
    return endpoint;
  };
  const first = attempt(conn);
  assert.deepEqual({ ip: first.ip, port: first.port, poolKey: first.poolKey }, { ip: cart.ip, port: 8080, poolKey: `${spiffe(client)}|${cart.ip}:8080` });
  assert.equal(attempt(conn), first, 'the same upstream: the same endpoint');
  assert.notEqual(attempt({ ...conn }), first, 'another connection builds its own');

  // The pod moves to another port: a new endpoint.
  applyConfig(config, { workloads: [client, cart], services: [{ ...service, ports: [{ ...service.ports[0]!, targetPort: 9090 }] }] }, 2);
  const moved = attempt(conn);
  assert.equal(moved.port, 9090);
  // A new trust domain: the tunnel must ask for the pod's new identity.
  config.apply({ epoch: 'e', version: 3, snapshot: false, upserts: [{ kind: 'settings', key: 'mesh', version: 3, settings: { trustDomain: 'prod.example', rootNamespace: 'nodemesh-system' } }], removals: [] });
  assert.notEqual(attempt(conn), moved);
});
