// Tracing through the mesh in-process: a real outbound listener on the source
// node (n2), real HBONE to a real inbound listener on the destination node (n1),
// a real HTTP server for the pod, and an OTLP/HTTP receiver inside the test that
// decodes what both nodes export. One request must give one trace: the source
// node's CLIENT span, the destination node's SERVER span as its child, the pod
// seeing the trace continue from that span.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import type { Resource, Service } from '../../core/types.ts';
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
import { Tracing, TracingConfigError, parseOtlpEndpoint } from '../tracing.ts';
import { createOutboundHttp } from './outbound-http.ts';
import { HttpInbound } from './http-inbound.ts';

const client = workload('frontend', '127.0.0.2', 'n2', { namespace: 'web' });
const cart = workload('cart-v1', '127.0.0.3', 'n1', { serviceAccount: 'cart' });

interface OtlpSpan {
  traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number;
  attributes: { key: string; value: { stringValue?: string; intValue?: string | number } }[];
}
interface Exported { host: string; span: OtlpSpan }

/** An OTLP/HTTP trace receiver: decodes each JSON export into (host.name, span). */
async function otlpReceiver(t: TestContext): Promise<{ endpoint: string; spans: Exported[]; contentTypes: string[] }> {
  const spans: Exported[] = [];
  const contentTypes: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      contentTypes.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const body = JSON.parse(Buffer.concat(chunks).toString()) as {
        resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
      };
      for (const rs of body.resourceSpans) {
        const host = rs.resource.attributes.find((a) => a.key === 'host.name')?.value.stringValue ?? '?';
        for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ host, span });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, contentTypes };
}

/** Both nodes' data planes with `tracing(node)`, and the pod; returns one-request-from-the-client. */
async function mesh(t: TestContext, tracing: (node: string) => Promise<Tracing | undefined>) {
  const seen: http.IncomingHttpHeaders[] = [];
  const pod = http.createServer((req, res) => {
    seen.push(req.headers);
    res.end('ok');
  });
  await new Promise<void>((resolve) => pod.listen(0, cart.ip, resolve));
  t.after(() => {
    pod.closeAllConnections();
    pod.close();
  });
  const appPort = (pod.address() as AddressInfo).port;
  const service: Service = {
    namespace: 'shop', name: 'cart', vips: ['10.96.0.10'], opaquePorts: [],
    ports: [{ name: 'http', port: 80, targetPort: appPort, targetPortName: '', appProtocol: '' }],
    endpoints: [{ workloadUid: cart.uid, ip: cart.ip, ready: true }],
  };
  const update = {
    epoch: 't', version: 1, snapshot: true, removals: [],
    upserts: [
      ...[client, cart].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
      { kind: 'service', key: 'shop/cart', version: 1, service } as Resource,
    ],
  };
  const ca = await createMeshCa();
  const [sourceTracing, destinationTracing] = [await tracing('n2'), await tracing('n1')];
  t.after(async () => {
    await sourceTracing?.shutdown();
    await destinationTracing?.shutdown();
  });

  const dConfig = new ConfigStore('n1');
  dConfig.apply(update);
  const dMetrics = createMetrics(new Registry());
  const dAdmission = new Admission(dConfig, dMetrics);
  const inbound = await InboundListener.bind({
    config: dConfig, certs: await MemoryCertSource.issuing(ca, [spiffe(cart)]), tracker: new ConnectionTracker(dMetrics), admission: dAdmission,
    host: cart.ip, port: 0, http: new HttpInbound(dAdmission, dMetrics, { tracing: destinationTracing }),
    destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
  });
  t.after(() => inbound.close());

  const sConfig = new ConfigStore('n2');
  sConfig.apply(update);
  const sMetrics = createMetrics(new Registry());
  const pool = new HbonePool({ certs: await MemoryCertSource.issuing(ca, [spiffe(client)]), port: inbound.port });
  t.after(() => pool.destroy());
  const sAdmission = new Admission(sConfig, sMetrics);
  const outboundHttp = createOutboundHttp({ config: sConfig, pool, admission: sAdmission, metrics: sMetrics, tracing: sourceTracing });
  t.after(() => outboundHttp.close());
  const outbound = await OutboundListener.bind({
    config: sConfig, tracker: new ConnectionTracker(sMetrics), admission: sAdmission, pool, balancer: new LoadBalancer(), http: outboundHttp,
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: '10.96.0.10', port: 80 }),
  });
  t.after(() => outbound.close());

  const request = (headers: Record<string, string> = {}) => new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip, path: '/cart/items?id=7', headers: { host: 'cart.shop', ...headers }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
  return { request, seen };
}

async function until<T>(what: string, get: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue === undefined ? undefined : Number(v.intValue));
};

test('tracing: one request through the mesh is one trace: the source node\'s CLIENT span, the destination node\'s SERVER span as its child, exported over OTLP/HTTP', async (t) => {
  const receiver = await otlpReceiver(t);
  const { request, seen } = await mesh(t, (node) => Tracing.create({ otlpEndpoint: receiver.endpoint, nodeName: node, exportDelayMs: 100 }));
  const callerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
  const callerSpan = '00f067aa0ba902b7';
  assert.equal(await request({ traceparent: `00-${callerTrace}-${callerSpan}-01` }), 200);
  const [source, destination] = await until('a span from each node', () => {
    const s = receiver.spans.find((e) => e.host === 'n2');
    const d = receiver.spans.find((e) => e.host === 'n1');
    return s && d ? [s.span, d.span] : undefined;
  });
  assert.match(receiver.contentTypes[0]!, /^POST \/v1\/traces application\/json/);
  assert.equal(receiver.spans.length, 2, 'one span per side');
  assert.equal(source.traceId, callerTrace, 'the source span continues the caller\'s trace');
  assert.equal(source.parentSpanId, callerSpan);
  assert.equal(source.kind, 3, 'CLIENT on the source node');
  assert.equal(destination.traceId, callerTrace, 'one trace across both nodes');
  assert.equal(destination.parentSpanId, source.spanId, 'the destination span is the source span\'s child');
  assert.equal(destination.kind, 2, 'SERVER on the destination node');
  for (const span of [source, destination]) {
    assert.equal(span.name, 'GET');
    assert.equal(attr(span, 'http.request.method'), 'GET');
    assert.equal(attr(span, 'url.path'), '/cart/items', 'the path without the query');
    assert.equal(attr(span, 'http.response.status_code'), 200);
    assert.equal(attr(span, 'nodemesh.source.identity'), 'spiffe://cluster.local/ns/web/sa/frontend');
    assert.equal(attr(span, 'nodemesh.destination.identity'), 'spiffe://cluster.local/ns/shop/sa/cart');
  }
  assert.equal(attr(source, 'nodemesh.reporter'), 'source');
  assert.equal(attr(destination, 'nodemesh.reporter'), 'destination');
  // The pod sees the trace continue from the destination node's span, and one x-request-id on both spans.
  assert.equal(seen[0]!.traceparent, `00-${callerTrace}-${destination.spanId}-01`);
  assert.match(String(seen[0]!['x-request-id']), /^[0-9a-f-]{36}$/);
  assert.equal(attr(source, 'nodemesh.request_id'), seen[0]!['x-request-id']);
  assert.equal(attr(destination, 'nodemesh.request_id'), seen[0]!['x-request-id']);
});

test('tracing: a request without traceparent starts a trace at the source node; a hostile traceparent or x-request-id is replaced, never propagated', async (t) => {
  const receiver = await otlpReceiver(t);
  const { request, seen } = await mesh(t, (node) => Tracing.create({ otlpEndpoint: receiver.endpoint, nodeName: node, exportDelayMs: 100 }));
  assert.equal(await request({ 'x-request-id': 'caller-chosen-1' }), 200);
  const hostile = [
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01-extra`,
    '00-zzzz',
  ];
  for (const traceparent of hostile) assert.equal(await request({ traceparent, 'x-request-id': 'x'.repeat(200) }), 200);
  const roots = await until('every request\'s pair of spans', () => (receiver.spans.length >= 2 * (1 + hostile.length) ? receiver.spans : undefined));
  const sources = roots.filter((e) => e.host === 'n2').map((e) => e.span);
  assert.equal(sources.length, 1 + hostile.length);
  for (const s of sources) {
    assert.equal(s.parentSpanId || undefined, undefined, 'a new root span: nothing of the bad header is kept');
    assert.doesNotMatch(s.traceId, /^0+$|^a+$/);
  }
  assert.equal(seen[0]!['x-request-id'], 'caller-chosen-1', 'a request id the caller set is kept');
  for (const h of seen.slice(1)) {
    assert.match(String(h['x-request-id']), /^[0-9a-f-]{36}$/, 'an oversized request id is replaced');
    assert.match(String(h.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  }
});

test('tracing: without an endpoint nothing is exported, traceparent passes untouched and x-request-id is added', async (t) => {
  const { request, seen } = await mesh(t, (node) => Tracing.create({ nodeName: node }));
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  assert.equal(await request({ traceparent, tracestate: 'vendor=1' }), 200);
  assert.equal(seen[0]!.traceparent, traceparent);
  assert.equal(seen[0]!.tracestate, 'vendor=1');
  assert.match(String(seen[0]!['x-request-id']), /^[0-9a-f-]{36}$/);
});

test('tracing: --otlp-endpoint accepts an http(s) base URL only, naming what is wrong', () => {
  assert.equal(parseOtlpEndpoint('http://otel-collector.observability:4318/'), 'http://otel-collector.observability:4318');
  assert.equal(parseOtlpEndpoint('https://collector.example/otlp'), 'https://collector.example/otlp');
  for (const bad of ['file:///etc/passwd', 'http://user:secret@collector:4318', 'http://collector:4318/?x=1', 'http://collector:4318/#f', 'collector:4318', 'not a url', 'javascript:alert(1)', '']) {
    assert.throws(() => parseOtlpEndpoint(bad), (err: unknown) => err instanceof TracingConfigError && err.code === 'NM_BAD_TRACING' && /--otlp-endpoint: /.test(err.message), bad);
  }
});

test('tracing: --access-log-requests writes one JSON access line per request, with its trace and request ids', async () => {
  const tracing = await Tracing.create({ nodeName: 'n1', accessLogRequests: true });
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    const headers: http.IncomingHttpHeaders = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' };
    const trace = tracing.start('destination', headers, { method: 'POST', path: '/orders' });
    trace.end(201, { sourceIdentity: 'spiffe://cluster.local/ns/web/sa/frontend', destinationWorkload: 'shop/cart-v1' });
    trace.end(500, {});
  } finally {
    process.stderr.write = write;
  }
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.scope === 'access' && l.msg === 'request');
  assert.equal(logged.length, 1, 'end is idempotent');
  assert.equal(logged[0]!.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.match(String(logged[0]!.requestId), /^[0-9a-f-]{36}$/);
  assert.deepEqual([logged[0]!.reporter, logged[0]!.method, logged[0]!.path, logged[0]!.status, logged[0]!.sourceIdentity], ['destination', 'POST', '/orders', 201, 'spiffe://cluster.local/ns/web/sa/frontend']);
});
