// The tap's request and refusal events in-process: a real outbound listener on
// the source node (n2), real HBONE to a real inbound listener on the destination
// node (n1), a gRPC-like h2c pod. Each node's tap sees the gRPC request it
// proxied (method, grpc-status, status, latency, both identities), and the
// destination's tap the request its policy refused, with the policy.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import type { AuthorizationPolicy, Resource, Service } from '../../core/types.ts';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { ConfigStore } from '../config-store.ts';
import { createMetrics } from '../metrics.ts';
import { ConnectionTracker } from '../connection-tracker.ts';
import { LoadBalancer } from '../load-balancer.ts';
import { HbonePool } from '../hbone-pool.ts';
import { InboundListener } from '../inbound.ts';
import { OutboundListener } from '../outbound.ts';
import { MemoryCertSource, spiffe, workload } from '../testdata/mesh-fixture.ts';
import { Admission } from '../admission.ts';
import { Tap } from '../tap.ts';
import type { TapEvent } from '../tap.ts';
import { parseTapFilter } from '../tap.ts';
import { createOutboundHttp } from './outbound-http.ts';
import { HttpInbound } from './http-inbound.ts';

const client = workload('frontend', '127.0.0.2', 'n2', { namespace: 'web' });
const cart = workload('cart-v1', '127.0.0.3', 'n1', { serviceAccount: 'cart', labels: { app: 'cart' } });

const DENY_REMOVE: AuthorizationPolicy = {
  namespace: 'shop', name: 'no-remove', selector: { app: 'cart' }, action: 'DENY',
  rules: [{ from: [], to: [{ ports: [], notPorts: [], methods: [], notMethods: [], paths: ['/shop.Cart/Remove'], notPaths: [] }] }],
};

async function mesh(t: TestContext, policies: AuthorizationPolicy[] = [DENY_REMOVE]) {
  const pod = http2.createServer();
  pod.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end('ok');
  });
  const sessions = new Set<http2.Http2Session>();
  pod.on('session', (s) => sessions.add(s));
  await new Promise<void>((resolve) => pod.listen(0, cart.ip, resolve));
  t.after(() => {
    sessions.forEach((s) => s.destroy());
    pod.close();
  });
  const appPort = (pod.address() as AddressInfo).port;
  const service: Service = {
    namespace: 'shop', name: 'cart', vips: ['10.96.0.10'], opaquePorts: [],
    ports: [{ name: 'grpc', port: 80, targetPort: appPort, targetPortName: '', appProtocol: 'kubernetes.io/h2c' }],
    endpoints: [{ workloadUid: cart.uid, ip: cart.ip, ready: true }],
  };
  const update = {
    epoch: 't', version: 1, snapshot: true, removals: [],
    upserts: [
      ...[client, cart].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
      { kind: 'service', key: 'shop/cart', version: 1, service } as Resource,
      ...policies.map((p): Resource => ({ kind: 'policy', key: `${p.namespace}/${p.name}`, version: 1, policy: p })),
    ],
  };
  const ca = await createMeshCa();
  const dTap = new Tap();
  const dConfig = new ConfigStore('n1');
  dConfig.apply(update);
  const dMetrics = createMetrics(new Registry());
  const dAdmission = new Admission(dConfig, dMetrics, dTap);
  const inbound = await InboundListener.bind({
    config: dConfig, certs: await MemoryCertSource.issuing(ca, [spiffe(cart)]), tracker: new ConnectionTracker(dMetrics, undefined, dTap), admission: dAdmission,
    host: cart.ip, port: 0, http: new HttpInbound(dAdmission, dMetrics, { tap: dTap }),
    destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
  });
  t.after(() => inbound.close());

  const sTap = new Tap();
  const sConfig = new ConfigStore('n2');
  sConfig.apply(update);
  const sMetrics = createMetrics(new Registry());
  const pool = new HbonePool({ certs: await MemoryCertSource.issuing(ca, [spiffe(client)]), port: inbound.port });
  t.after(() => pool.destroy());
  const sAdmission = new Admission(sConfig, sMetrics, sTap);
  const outboundHttp = createOutboundHttp({ config: sConfig, pool, admission: sAdmission, metrics: sMetrics, tap: sTap });
  t.after(() => outboundHttp.close());
  const outbound = await OutboundListener.bind({
    config: sConfig, tracker: new ConnectionTracker(sMetrics, undefined, sTap), admission: sAdmission, pool, balancer: new LoadBalancer(), http: outboundHttp,
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: '10.96.0.10', port: 80 }),
  });
  t.after(() => outbound.close());
  const session = http2.connect(`http://127.0.0.1:${outbound.port}`, { localAddress: client.ip } as http2.SecureClientSessionOptions);
  t.after(() => session.destroy());
  const call = (method: string) => new Promise<number>((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': `/shop.Cart/${method}`, 'content-type': 'application/grpc' });
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('error', reject);
    req.resume();
    req.on('end', () => resolve(status));
    req.end('x');
  });
  return { call, sTap, dTap };
}

async function until<T>(what: string, get: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('tap: each node sees the gRPC request it proxies (gRPC method, grpc-status, status, latency, both identities), and the destination the request its policy refuses', async (t) => {
  const { call, sTap, dTap } = await mesh(t);
  const source: TapEvent[] = [];
  const destination: TapEvent[] = [];
  sTap.subscribe((e) => source.push(e), parseTapFilter(new URLSearchParams('event=request')));
  dTap.subscribe((e) => destination.push(e), parseTapFilter(new URLSearchParams('event=request,refusal&namespace=shop')));
  assert.equal(await call('Add'), 200);
  const [s, d] = await until('a request event on both nodes', () => (source[0] && destination[0] ? [source[0], destination[0]] : undefined));
  for (const [e, reporter] of [[s, 'source'], [d, 'destination']] as const) {
    assert.equal(e.reporter, reporter);
    assert.equal(e.protocol, 'grpc');
    assert.equal(e.method, 'POST');
    assert.equal(e.grpcMethod, 'shop.Cart/Add');
    assert.equal(e.grpcStatus, '0');
    assert.equal(e.status, 200);
    assert.equal(typeof e.latencyMs, 'number');
    assert.equal(e.security, 'mutual_tls');
    assert.deepEqual([e.source!.workload, e.source!.identity], ['web/frontend', 'spiffe://cluster.local/ns/web/sa/frontend']);
    assert.deepEqual([e.destination!.workload, e.destination!.identity, e.destination!.service], ['shop/cart-v1', 'spiffe://cluster.local/ns/shop/sa/cart', 'shop/cart']);
  }

  assert.equal(await call('Remove'), 403);
  const refusal = await until('the refusal', () => destination.find((e) => e.event === 'refusal'));
  assert.deepEqual([refusal.reason, refusal.policy, refusal.what, refusal.method, refusal.path], ['policy', 'shop/no-remove', 'HTTP request', 'POST', '/shop.Cart/Remove']);
  assert.equal(refusal.source!.identity, 'spiffe://cluster.local/ns/web/sa/frontend');
  const refused = await until('the refused request', () => destination.find((e) => e.event === 'request' && e.status === 403));
  assert.equal(refused.grpcMethod, 'shop.Cart/Remove');
  assert.equal(source.filter((e) => e.event !== 'request').length, 0, 'the source tap was asked for requests only');
});

test('a tap of requests on the destination moves clients off spliced tunnels: the next call of a held gRPC channel is seen there', async (t) => {
  // No policy reads requests: the destination splices the tunnel until someone taps requests.
  const { call, dTap } = await mesh(t, []);
  const before: TapEvent[] = [];
  const unsubscribe = dTap.subscribe((e) => before.push(e), parseTapFilter(new URLSearchParams('event=open')));
  assert.equal(await call('Add'), 200);
  assert.equal(dTap.wantsRequests, false, 'a tap of opens alone does not want requests');
  unsubscribe();
  const seen: TapEvent[] = [];
  dTap.subscribe((e) => seen.push(e), parseTapFilter(new URLSearchParams('event=request')));
  assert.equal(dTap.wantsRequests, true);
  // The first call after the tap may still finish on the spliced tunnel; the source then leaves it.
  for (let i = 0; i < 3 && !seen.length; i++) assert.equal(await call('Add'), 200);
  const request = await until('the destination to see a request', () => seen[0]);
  assert.deepEqual([request.reporter, request.grpcMethod], ['destination', 'shop.Cart/Add']);
});
