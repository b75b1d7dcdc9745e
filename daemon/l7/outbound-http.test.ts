// The HTTP path end to end in-process: a real outbound listener (told the
// original destination instead of reading SO_ORIGINAL_DST), real HBONE to real
// inbound listeners, real HTTP servers on loopback addresses standing in for
// pods (127.0.0.2 the client pod on node n2, 127.0.0.3/.4 server pods on n1,
// 127.0.0.5 a server pod on n2, next to the client).

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { WebSocket, WebSocketServer } from 'ws';
import type { AuthorizationPolicy, HttpRoute, HttpRouteRule, Resource, Service, Workload } from '../../core/types.ts';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { compileRouteRegex, isLinear } from '../../core/route-regex.ts';
import { ConfigStore } from '../config-store.ts';
import { createMetrics } from '../metrics.ts';
import { ConnectionTracker } from '../connection-tracker.ts';
import { LoadBalancer } from '../load-balancer.ts';
import { HbonePool } from '../hbone-pool.ts';
import { InboundListener } from '../inbound.ts';
import { OutboundListener } from '../outbound.ts';
import type { SocketAddress } from '../original-dst.ts';
import { MemoryCertSource, spiffe, workload } from '../testdata/mesh-fixture.ts';
import { createOutboundHttp } from './outbound-http.ts';
import { Admission, decide } from '../admission.ts';
import { HttpInbound } from './http-inbound.ts';
import { SourceLimits } from '../source-limits.ts';
import { logger } from '../../core/log.ts';

const client = workload('frontend', '127.0.0.2', 'n2', { namespace: 'web' });
const v1 = workload('cart-v1', '127.0.0.3', 'n1', { labels: { app: 'cart', version: 'v1' }, serviceAccount: 'cart' });
const v2 = workload('cart-v2', '127.0.0.4', 'n1', { labels: { app: 'cart', version: 'v2' }, serviceAccount: 'cart' });
const local = workload('inventory', '127.0.0.5', 'n2');
const WORKLOADS = [client, v1, v2, local];

function service(name: string, vip: string, endpoints: Workload[], targetPort: number, extra: Partial<Service> = {}): Service {
  return {
    namespace: 'shop', name, vips: [vip], ports: [{ name: 'http', port: 80, targetPort, targetPortName: '', appProtocol: '' }],
    endpoints: endpoints.map((w) => ({ workloadUid: w.uid, ip: w.ip, ready: true })), opaquePorts: [], ...extra,
  };
}

function route(rules: Partial<HttpRouteRule>[], name = 'cart', namespace = 'shop'): HttpRoute {
  return {
    namespace, name, parents: [{ namespace: 'shop', name: 'cart', port: 0 }], hostnames: [], creationTimestamp: '2025-01-01T00:00:00Z',
    rules: rules.map((r) => ({
      matches: [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: '' }],
      filters: [], backendRefs: [], requestTimeoutMs: 0, backendRequestTimeoutMs: 0, ...r,
    })),
  };
}

const backend = (name: string, weight = 1) => ({ namespace: 'shop', name, port: 80, weight, invalidReason: '' });

interface Pod {
  name: string;
  /** Requests seen, for retry assertions. */
  hits: number;
  /** Status codes to answer the next requests with before behaving. */
  failWith: number[];
  /** Connections accepted. */
  connections: number;
}

/** 16 MiB of a pattern: more than every buffer and window on the way, so a slow reader holds the pod back. */
const BIG_RESPONSE = Buffer.alloc(16 * 1024 * 1024, 'nodemesh-');

/** An HTTP "pod": echoes what it saw as JSON; /slow waits, /big is BIG_RESPONSE, /sse streams, WebSocket echoes. */
async function pod(t: TestContext, ip: string, name: string, port = 0): Promise<{ port: number; state: Pod }> {
  const state: Pod = { name, hits: 0, failWith: [], connections: 0 };
  const server = http.createServer((req, res) => {
    state.hits++;
    const failure = state.failWith.shift();
    if (failure) return void res.writeHead(failure).end(`${name} failing`);
    if (req.url === '/slow') return void setTimeout(() => res.end('late'), 1_000).unref();
    if (req.url === '/big') return void res.end(BIG_RESPONSE);
    if (req.url === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      setTimeout(() => res.end('data: last\n\n'), 300).unref();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-served-by', name);
      res.end(JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString() }));
    });
  });
  server.on('connection', () => state.connections++);
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`${name}:${String(m)}`)));
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, ip, () => resolve()));
  t.after(() => {
    wss.clients.forEach((c) => c.terminate());
    wss.close();
    server.closeAllConnections();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, state };
}

/** A gRPC-like h2c "pod": data then trailers with grpc-status; /fail answers trailers-only with an error. */
async function h2Pod(t: TestContext, ip: string, name: string, port = 0): Promise<number> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    if (headers[':path'] === '/fail') {
      return void stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'not found' }, { endStream: true });
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-served-by': name }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': `ok from ${name}` }));
      stream.end(JSON.stringify({ name, path: headers[':path'], xff: headers['x-forwarded-for'], body: Buffer.concat(chunks).toString() }));
    });
  });
  const sessions = new Set<http2.Http2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, ip, () => resolve()));
  t.after(() => {
    sessions.forEach((s) => s.destroy());
    server.close();
  });
  return (server.address() as AddressInfo).port;
}

async function setup(t: TestContext, things: {
  routes?: HttpRoute[]; policies?: AuthorizationPolicy[]; services?: (appPort: number) => Service[]; limits?: SourceLimits; destinationRequestMetrics?: boolean;
} = {}) {
  const ca = await createMeshCa();
  const clientCerts = await MemoryCertSource.issuing(ca, [spiffe(client)]);
  const serverCerts = await MemoryCertSource.issuing(ca, [spiffe(v1), spiffe(local)]);
  const a = await pod(t, v1.ip, 'cart-v1');
  const b = await pod(t, v2.ip, 'cart-v2', a.port);
  const c = await pod(t, local.ip, 'inventory', a.port);
  const h2Port = await h2Pod(t, v1.ip, 'cart-v1');
  await h2Pod(t, v2.ip, 'cart-v2', h2Port);
  const grpc = (name: string, vip: string, endpoints: Workload[]) => {
    const svc = service(name, vip, endpoints, h2Port);
    svc.ports = [{ name: 'api', port: 80, targetPort: h2Port, targetPortName: '', appProtocol: 'kubernetes.io/h2c' }];
    return svc;
  };
  const services = things.services?.(a.port) ?? [
    service('cart', '10.96.0.10', [v1, v2], a.port),
    service('cart-v1', '10.96.0.11', [v1], a.port),
    service('cart-v2', '10.96.0.12', [v2], a.port),
    service('inventory', '10.96.0.20', [local], a.port),
    grpc('grpc', '10.96.0.30', [v1, v2]), grpc('grpc-v1', '10.96.0.31', [v1]), grpc('grpc-v2', '10.96.0.32', [v2]),
  ];
  const resources: Resource[] = [
    ...WORKLOADS.map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w })),
    ...services.map((s): Resource => ({ kind: 'service', key: `${s.namespace}/${s.name}`, version: 1, service: s })),
    ...(things.routes ?? []).map((r): Resource => ({ kind: 'route', key: `${r.namespace}/${r.name}`, version: 1, route: r })),
    ...(things.policies ?? []).map((p): Resource => ({ kind: 'policy', key: `${p.namespace}/${p.name}`, version: 1, policy: p })),
  ];
  const update = { epoch: 't', version: 1, snapshot: true, upserts: resources, removals: [] };
  const sourceConfig = new ConfigStore('n2');
  sourceConfig.apply(update);
  const destinationConfig = new ConfigStore('n1');
  destinationConfig.apply(update);

  const destinationRegistry = new Registry();
  const destinationMetrics = createMetrics(destinationRegistry);
  const destinationTracker = new ConnectionTracker(destinationMetrics);
  const destinationAdmission = new Admission(destinationConfig, destinationMetrics);
  const destinationHttp = new HttpInbound(destinationAdmission, destinationMetrics, { requestMetrics: things.destinationRequestMetrics });
  const inboundFor = async (ip: string, port: number) => {
    const inbound = await InboundListener.bind({
      config: destinationConfig, certs: serverCerts, tracker: destinationTracker, admission: destinationAdmission, host: ip, port, http: destinationHttp,
      destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
    });
    t.after(() => inbound.close());
    return inbound;
  };
  const hbonePort = (await inboundFor(v1.ip, 0)).port;
  await inboundFor(v2.ip, hbonePort);

  const registry = new Registry();
  const metrics = createMetrics(registry);
  const tracker = new ConnectionTracker(metrics);
  const pool = new HbonePool({ certs: clientCerts, port: hbonePort });
  t.after(() => pool.destroy());
  const admission = new Admission(sourceConfig, metrics);
  const httpOutbound = createOutboundHttp({ config: sourceConfig, pool, admission, metrics, limits: things.limits });
  t.after(() => httpOutbound.close());
  let target: SocketAddress = { ip: '10.96.0.10', port: 80 };
  const outbound = await OutboundListener.bind({
    config: sourceConfig, tracker, admission, pool, balancer: new LoadBalancer(), http: httpOutbound, host: '127.0.0.1', port: 0,
    destinationOf: () => target,
  });
  t.after(() => outbound.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());

  /** One request from the client pod, as if to `dst` (a VIP or pod IP). */
  const request = (dst: SocketAddress, path: string, opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string } = {}) => {
    target = dst;
    return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: outbound.port, localAddress: client.ip, agent, path, method: opts.method ?? 'GET',
        headers: { host: 'cart.shop', ...opts.headers },
      }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(opts.body);
    });
  };
  const setTarget = (dst: SocketAddress) => (target = dst);
  const destination = { config: destinationConfig, tracker: destinationTracker };
  return { request, setTarget, outbound, h2Port, registry, destinationRegistry, destination, pods: { a: a.state, b: b.state, c: c.state }, appPort: a.port, sourceConfig };
}

const CART = { ip: '10.96.0.10', port: 80 };

test('weighted backendRefs split requests on one keep-alive connection 90/10 (per request, not per connection)', async (t) => {
  const { request, registry } = await setup(t, { routes: [route([{ backendRefs: [backend('cart-v1', 90), backend('cart-v2', 10)] }])] });
  const counts = { 'cart-v1': 0, 'cart-v2': 0 } as Record<string, number>;
  for (let i = 0; i < 1000; i++) {
    const r = await request(CART, `/item/${i}`);
    assert.equal(r.status, 200);
    counts[r.headers['x-served-by'] as string]!++;
  }
  assert.ok(counts['cart-v1']! >= 850 && counts['cart-v1']! <= 950, JSON.stringify(counts));
  const text = await registry.metrics();
  assert.match(text, /nodemesh_requests_total\{reporter="source",source_workload="frontend",source_workload_namespace="web",[^}]*destination_workload="cart-v1",[^}]*destination_service="cart-v1.shop.svc.cluster.local",connection_security_policy="mutual_tls",response_code="200"\} \d+/);
  assert.match(text, /nodemesh_request_duration_seconds_count\{reporter="source",[^}]*response_code="200"\} \d+/);
  assert.match(text, /nodemesh_tcp_connections_opened_total\{reporter="source",[^}]*destination_service="cart.shop.svc.cluster.local"[^}]*\} 1\n/, 'the client used one connection');
});

test('x-forwarded-for carries the client pod IP; request header filters and URL rewrites reach the server; response headers are modified', async (t) => {
  const { request } = await setup(t, {
    routes: [route([{
      matches: [{ path: { type: 'PathPrefix', value: '/old' }, headers: [], queryParams: [], method: '' }],
      filters: [
        { type: 'RequestHeaderModifier', headerModifier: { set: [{ name: 'x-env', value: 'canary' }], add: [], remove: ['x-debug'] }, scheme: '', hostname: '', port: 0, statusCode: 0 },
        { type: 'URLRewrite', hostname: 'cart.internal', path: { type: 'ReplacePrefixMatch', value: '/new' }, scheme: '', port: 0, statusCode: 0 },
        { type: 'ResponseHeaderModifier', headerModifier: { set: [], add: [{ name: 'x-route', value: 'old' }], remove: ['x-served-by'] }, scheme: '', hostname: '', port: 0, statusCode: 0 },
      ],
      backendRefs: [backend('cart-v1')],
    }])],
  });
  const r = await request(CART, '/old/thing?q=1', { headers: { 'x-debug': '1' } });
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
  assert.equal(seen.url, '/new/thing?q=1');
  assert.equal(seen.headers['x-forwarded-for'], client.ip);
  assert.equal(seen.headers['x-env'], 'canary');
  assert.equal(seen.headers['x-debug'], undefined);
  assert.equal(seen.headers.host, 'cart.internal');
  assert.equal(r.headers['x-route'], 'old');
  assert.equal(r.headers['x-served-by'], undefined);
});

test('forwarded request headers: the client\'s x-forwarded-* chains extended, every header sent once, cookies and repeated headers kept', async (t) => {
  const { request } = await setup(t, { routes: [route([{ backendRefs: [backend('cart-v1')] }])] });
  const r = await request(CART, '/item', {
    headers: { 'x-forwarded-for': '192.0.2.7', 'x-forwarded-proto': 'https', 'x-trace': ['a', 'b'], cookie: ['x=1', 'y=2'] },
  });
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body) as { headers: Record<string, string>; rawHeaders: string[] };
  assert.equal(seen.headers['x-forwarded-for'], `192.0.2.7, ${client.ip}`);
  assert.equal(seen.headers['x-forwarded-proto'], 'https, http');
  assert.equal(seen.headers['x-forwarded-port'], '80');
  assert.equal(seen.headers['x-trace'], 'a, b');
  assert.equal(seen.headers.cookie, 'x=1; y=2');
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
  for (const name of ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port', 'host']) {
    assert.equal(names.filter((n) => n === name).length, 1, `${name} sent once: ${JSON.stringify(seen.rawHeaders)}`);
  }
});

test('regression: the client\'s Connection header and the headers it names stop at the source node; its `connection: close` leaves the pooled upstream connection open', async (t) => {
  const { request, pods } = await setup(t, { routes: [route([{ backendRefs: [backend('cart-v1')] }])] });
  for (let i = 0; i < 3; i++) {
    const r = await request(CART, '/item', {
      method: 'POST', body: 'payload',
      // A hostile list too: the headers that frame the message are never dropped.
      headers: { connection: 'close, x-secret, content-length, host', 'x-secret': '1', 'keep-alive': 'timeout=1', 'proxy-connection': 'close', te: 'trailers' },
    });
    assert.equal(r.status, 200);
    const seen = JSON.parse(r.body) as { headers: Record<string, string | undefined>; body: string };
    assert.equal(seen.body, 'payload');
    assert.equal(seen.headers.host, 'cart.shop');
    for (const name of ['x-secret', 'keep-alive', 'proxy-connection', 'te']) assert.equal(seen.headers[name], undefined, `${name} forwarded`);
    assert.doesNotMatch(seen.headers.connection ?? '', /close|x-secret/);
  }
  assert.equal(pods.a.connections, 1, 'each client connection closed; the upstream one is reused');
});

test('a request the parser refuses is answered by the source node: 431 for headers over 16 KiB, 400 for bytes that are not HTTP', async (t) => {
  const { outbound, setTarget, pods } = await setup(t, { routes: [route([{ backendRefs: [backend('cart-v1')] }])] });
  setTarget(CART);
  const raw = (bytes: string) => new Promise<string>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }, () => socket.write(bytes));
    let answer = '';
    socket.setEncoding('utf8').on('data', (c: string) => (answer += c)).on('close', () => resolve(answer)).on('error', reject);
  });
  assert.match(await raw(`GET / HTTP/1.1\r\nhost: cart.shop\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1.1 431 Request Header Fields Too Large\r\n/);
  assert.match(await raw('hello\r\n\r\n'), /^HTTP\/1.1 400 Bad Request\r\n/);
  assert.equal(pods.a.hits, 0, 'none of them reached the pod');
});

test('404 when no rule matches, 500 for invalid or zero-weight backends, 503 without ready endpoints, redirects answered locally', async (t) => {
  const { request } = await setup(t, {
    routes: [route([
      { matches: [{ path: { type: 'Exact', value: '/invalid' }, headers: [], queryParams: [], method: '' }], backendRefs: [{ ...backend('gone'), invalidReason: 'BackendNotFound: Service shop/gone does not exist' }] },
      { matches: [{ path: { type: 'Exact', value: '/zero' }, headers: [], queryParams: [], method: '' }], backendRefs: [backend('cart-v1', 0)] },
      { matches: [{ path: { type: 'Exact', value: '/empty' }, headers: [], queryParams: [], method: '' }], backendRefs: [backend('drained')] },
      { matches: [{ path: { type: 'PathPrefix', value: '/moved' }, headers: [], queryParams: [], method: '' }], filters: [{ type: 'RequestRedirect', scheme: 'https', hostname: 'shop.example', port: 0, statusCode: 301 }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [], queryParams: [], method: '' }], backendRefs: [backend('cart-v1')] },
    ])],
    services: (port) => [service('cart', '10.96.0.10', [v1, v2], port), service('cart-v1', '10.96.0.11', [v1], port), service('drained', '10.96.0.13', [], port)],
  });
  const missing = await request(CART, '/nothing');
  assert.equal(missing.status, 404);
  assert.match(missing.body, /no rule of the HTTPRoutes attached to shop\/cart matches GET \/nothing/);
  const invalid = await request(CART, '/invalid');
  assert.equal(invalid.status, 500);
  assert.match(invalid.body, /BackendNotFound/);
  assert.equal((await request(CART, '/zero')).status, 500);
  const empty = await request(CART, '/empty');
  assert.equal(empty.status, 503);
  assert.match(empty.body, /Service shop\/drained has no ready endpoint/);
  const moved = await request(CART, '/moved/x?y=1');
  assert.equal(moved.status, 301);
  assert.equal(moved.headers.location, 'https://shop.example/moved/x?y=1');
  assert.equal((await request(CART, '/api/ok')).status, 200, 'the connection survived the local replies');
});

test('503s and connect failures are retried on another endpoint; a large body is never replayed', async (t) => {
  const { request, pods, sourceConfig, appPort } = await setup(t);
  pods.a.failWith = [503];
  pods.b.failWith = [503];
  const first = await request(CART, '/r', { method: 'POST', body: 'payload' });
  assert.equal(first.status, 200, `two 503s then success within three attempts: ${first.body}`);
  assert.equal((JSON.parse(first.body) as { body: string }).body, 'payload', 'the body was replayed');
  assert.equal(pods.a.hits + pods.b.hits, 3);

  pods.a.failWith = [503];
  pods.b.failWith = [503];
  const big = 'x'.repeat(100 * 1024);
  const large = await request(CART, '/big', { method: 'POST', body: big });
  assert.equal(large.status, 503, 'bodies over 64 KiB are not buffered, so not retried');
  pods.a.failWith = [];
  pods.b.failWith = [];

  // An endpoint where nothing listens: the connect failure is retried elsewhere.
  const dead = workload('cart-dead', '127.0.0.6', 'n2', { labels: { app: 'cart' } });
  sourceConfig.apply({
    epoch: 't', version: 2, snapshot: false, removals: [],
    upserts: [
      { kind: 'workload', key: dead.uid, version: 2, workload: dead },
      { kind: 'service', key: 'shop/cart', version: 2, service: service('cart', '10.96.0.10', [dead, v1], appPort) },
    ],
  });
  for (let i = 0; i < 20; i++) assert.equal((await request(CART, `/c${i}`)).status, 200);
});

test('timeouts: backendRequest and request answer 504 in time', async (t) => {
  const { request } = await setup(t, {
    routes: [route([
      { matches: [{ path: { type: 'Exact', value: '/slow' }, headers: [], queryParams: [], method: '' }], backendRefs: [backend('cart-v1')], backendRequestTimeoutMs: 200 },
      { matches: [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: '' }], backendRefs: [backend('cart-v2')], requestTimeoutMs: 300 },
    ])],
  });
  let started = performance.now();
  assert.equal((await request(CART, '/slow')).status, 504);
  assert.ok(performance.now() - started < 900);
  started = performance.now();
  assert.equal((await request(CART, '/slow?x')).status, 200, 'path /slow with a query is Exact /slow too');
});

test('server-sent events stream through unbuffered; WebSocket upgrades pass through HBONE', async (t) => {
  const { setTarget, outbound } = await setup(t);
  setTarget(CART);
  const firstEventAfter = await new Promise<number>((resolve, reject) => {
    const started = performance.now();
    const req = http.get({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip, path: '/sse' }, (res) => {
      res.once('data', () => {
        resolve(performance.now() - started);
        res.destroy();
      });
    });
    req.on('error', reject);
  });
  assert.ok(firstEventAfter < 250, `first event after ${firstEventAfter} ms; the stream ends at 300 ms`);

  const ws = new WebSocket(`ws://127.0.0.1:${outbound.port}/chat`, { localAddress: client.ip });
  t.after(() => ws.terminate());
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  ws.send('hello');
  const answer = await new Promise<string>((resolve) => ws.once('message', (m) => resolve(String(m))));
  assert.match(answer, /^cart-v[12]:hello$/);
});

test('same-node HTTP is authorized per request: only GET /public/* allowed, 403 otherwise', async (t) => {
  const allowPublic: AuthorizationPolicy = {
    namespace: 'shop', name: 'public-only', selector: { app: 'inventory' }, action: 'ALLOW',
    rules: [{ from: [], to: [{ ports: [], notPorts: [], methods: ['GET'], notMethods: [], paths: ['/public/*'], notPaths: [] }] }],
  };
  const { request, registry } = await setup(t, { policies: [allowPublic] });
  const INVENTORY = { ip: '10.96.0.20', port: 80 };
  assert.equal((await request(INVENTORY, '/public/a')).status, 200);
  const post = await request(INVENTORY, '/public/x', { method: 'POST', body: 'x' });
  assert.equal(post.status, 403);
  assert.match(post.body, /no rule of the ALLOW policies/);
  assert.equal((await request(INVENTORY, '/private')).status, 403);
  const after = await request(INVENTORY, "/public/b");
  assert.equal(after.status, 200, `the connection keeps working after a 403: ${after.body}`);
  assert.match(await registry.metrics(), /nodemesh_requests_total\{reporter="source",[^}]*destination_workload="inventory",[^}]*response_code="403"\} 2/);
});

test('a server-speaks-first protocol on an undeclared port gets its greeting within the detection timeout', async (t) => {
  const { setTarget, outbound } = await setup(t);
  const greeter = net.createServer((s) => s.end('220 ready\r\n'));
  await new Promise<void>((resolve) => greeter.listen(0, local.ip, resolve));
  t.after(() => greeter.close());
  setTarget({ ip: local.ip, port: (greeter.address() as AddressInfo).port });
  const started = performance.now();
  const greeting = await new Promise<string>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip });
    let got = '';
    s.on('data', (c) => (got += c));
    s.on('end', () => resolve(got));
    s.on('error', reject);
    s.on('end', () => s.end());
  });
  const elapsed = performance.now() - started;
  assert.equal(greeting, '220 ready\r\n');
  assert.ok(elapsed < 400, `greeting after ${elapsed} ms`);
});

test('on the destination node each request of a tunnel is authorized: only GET /public/* allowed, 403s in its metrics', async (t) => {
  const allowPublic: AuthorizationPolicy = {
    namespace: 'shop', name: 'public-only', selector: { app: 'cart' }, action: 'ALLOW',
    rules: [{ from: [{ principals: [], notPrincipals: [], namespaces: ['web'], notNamespaces: [], ipBlocks: [], notIpBlocks: [] }], to: [{ ports: [], notPorts: [], methods: ['GET'], notMethods: [], paths: ['/public/*'], notPaths: [] }] }],
  };
  const { request, destinationRegistry, registry } = await setup(t, { policies: [allowPublic] });
  const ok = await request(CART, '/public/a');
  assert.equal(ok.status, 200);
  assert.equal((JSON.parse(ok.body) as { headers: Record<string, string> }).headers['x-forwarded-for'], client.ip, 'x-forwarded-for added once, by the source node');
  const post = await request(CART, '/public/x', { method: 'POST', body: 'x' });
  assert.equal(post.status, 403);
  assert.match(post.body, /RBAC: access denied/);
  assert.equal((await request(CART, '/private')).status, 403);
  assert.equal((await request(CART, '/public/b')).status, 200, 'the tunnel keeps serving after a 403');
  const destination = await destinationRegistry.metrics();
  assert.match(destination, /nodemesh_requests_total\{reporter="destination",source_workload="frontend",source_workload_namespace="web",source_principal="spiffe:\/\/cluster.local\/ns\/web\/sa\/frontend",destination_workload="cart-v[12]",[^}]*connection_security_policy="mutual_tls",response_code="403"\} [12]/);
  // The two 403s may have gone to either endpoint: one series each, or one with both.
  const denied = [...destination.matchAll(/nodemesh_tcp_connections_denied_total\{reporter="destination",[^}]*reason="policy"\} (\d+)/g)];
  assert.equal(denied.reduce((sum, m) => sum + Number(m[1]), 0), 2, destination);
  assert.match(await registry.metrics(), /nodemesh_requests_total\{reporter="source",[^}]*response_code="403"\} [12]/);
});

const CART_V1 = { ip: '10.96.0.11', port: 80 };
/** The sum of a metric's series whose labels match `labels` (a regex over the label text). */
const sumOf = (text: string, metric: string, labels: RegExp) =>
  text.split('\n').filter((l) => l.startsWith(`${metric}{`) && labels.test(l)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);

test('with no policy on methods or paths the destination splices a tunnel on an HTTP port: the source counts each request, the destination one connection and no request', async (t) => {
  const { request, registry, destinationRegistry } = await setup(t);
  for (let i = 0; i < 5; i++) assert.equal((await request(CART_V1, `/item/${i}`)).status, 200);
  assert.equal(sumOf(await registry.metrics(), 'nodemesh_requests_total', /reporter="source",.*response_code="200"/), 5);
  const destination = await destinationRegistry.metrics();
  assert.equal(sumOf(destination, 'nodemesh_requests_total', /./), 0, 'the destination read no request');
  assert.equal(sumOf(destination, 'nodemesh_tcp_connections_opened_total', /reporter="destination",source_workload="frontend",.*destination_service="cart[^"]*\.shop\.svc\.cluster\.local",connection_security_policy="mutual_tls"/), 1,
    'one tunnel for the keep-alive connection, named with its Service');
});

test('a DENY on paths for another namespace\'s sources leaves the frontend\'s tunnel spliced: allowed at L4, each of its requests is allowed', async (t) => {
  const denyOpsAdmin: AuthorizationPolicy = {
    namespace: 'shop', name: 'ops-no-admin', selector: { app: 'cart' }, action: 'DENY',
    rules: [{ from: [{ principals: [], notPrincipals: [], namespaces: ['ops'], notNamespaces: [], ipBlocks: [], notIpBlocks: [] }], to: [{ ports: [], notPorts: [], methods: [], notMethods: [], paths: ['/admin'], notPaths: [] }] }],
  };
  const { request, destinationRegistry } = await setup(t, { policies: [denyOpsAdmin] });
  assert.equal((await request(CART_V1, '/admin')).status, 200);
  assert.equal(sumOf(await destinationRegistry.metrics(), 'nodemesh_requests_total', /./), 0, 'the destination read no request');
});

test('with destination request metrics on, the destination reads and counts each request of a tunnel', async (t) => {
  const { request, destinationRegistry } = await setup(t, { destinationRequestMetrics: true });
  for (let i = 0; i < 5; i++) assert.equal((await request(CART_V1, `/item/${i}`)).status, 200);
  assert.equal(sumOf(await destinationRegistry.metrics(), 'nodemesh_requests_total', /reporter="destination",source_workload="frontend",.*response_code="200"/), 5);
});

test('regression: a policy on paths that arrives while a tunnel is spliced closes the tunnel, and the client\'s next request is decided per request', async (t) => {
  const { request, destination } = await setup(t);
  assert.equal((await request(CART_V1, '/private')).status, 200, 'spliced: no policy yet');
  const denyPrivate: AuthorizationPolicy = {
    namespace: 'shop', name: 'deny-private', selector: { app: 'cart' }, action: 'DENY',
    rules: [{ from: [], to: [{ ports: [], notPorts: [], methods: [], notMethods: [], paths: ['/private'], notPaths: [] }] }],
  };
  destination.config.apply({ epoch: 't', version: 2, snapshot: false, upserts: [{ kind: 'policy', key: 'shop/deny-private', version: 2, policy: denyPrivate }], removals: [] });
  // What the daemon does on every config change (daemon.ts): open connections re-checked at L4.
  destination.tracker.reauthorize((input) => decide(destination.config, input));
  assert.equal((await request(CART_V1, '/public')).status, 200, 'a new tunnel, read per request');
  assert.equal((await request(CART_V1, '/private')).status, 403);
});

test('HTTP/2 (h2c, gRPC-like) is routed per stream 90/10 on one session; trailers and grpc-status pass through', async (t) => {
  const grpcRoute = { ...route([{ backendRefs: [backend('grpc-v1', 90), backend('grpc-v2', 10)] }], 'grpc'), parents: [{ namespace: 'shop', name: 'grpc', port: 0 }] };
  const { setTarget, outbound, registry } = await setup(t, { routes: [grpcRoute] });
  setTarget({ ip: '10.96.0.30', port: 80 });
  const session = http2.connect(`http://127.0.0.1:${outbound.port}`, {
    createConnection: () => net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }),
  });
  t.after(() => session.destroy());
  const call = (path: string) => new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc' });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    let body = '';
    stream.on('response', (h) => (headers = h));
    stream.on('trailers', (h) => (trailers = h));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ headers, trailers, body }));
    stream.on('error', reject);
    stream.end('request-bytes');
  });
  const counts: Record<string, number> = { 'cart-v1': 0, 'cart-v2': 0 };
  for (let i = 0; i < 400; i++) {
    const r = await call(`/shop.Cart/Get${i}`);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.trailers['grpc-status'], '0', 'trailers arrive');
    const seen = JSON.parse(r.body) as { name: string; xff: string; body: string };
    assert.equal(r.trailers['grpc-message'], `ok from ${seen.name}`);
    assert.equal(seen.xff, client.ip);
    assert.equal(seen.body, 'request-bytes');
    counts[seen.name]!++;
  }
  assert.ok(counts['cart-v1']! >= 330 && counts['cart-v1']! <= 390, JSON.stringify(counts));
  const failed = await call('/fail');
  assert.equal(failed.headers['grpc-status'], '5', 'a trailers-only error keeps its grpc-status');
  assert.equal(failed.headers['grpc-message'], 'not found');
  assert.match(await registry.metrics(), /nodemesh_requests_total\{reporter="source",[^}]*destination_service="grpc-v1.shop.svc.cluster.local",connection_security_policy="mutual_tls",response_code="200"\} \d+/);
  assert.match(await registry.metrics(), /nodemesh_tcp_connections_opened_total\{reporter="source",[^}]*destination_service="grpc.shop.svc.cluster.local"[^}]*\} 1\n/, 'one client connection');
});

test('a response larger than every buffer on the way reaches a client that reads slowly, whole, through both nodes', async (t) => {
  const { outbound, setTarget } = await setup(t);
  setTarget(CART_V1);
  const received = await new Promise<Buffer>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip, path: '/big', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      // Pauses every 64 KiB for a moment: the source node must stop reading the tunnel meanwhile.
      let sincePause = 0;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        sincePause += c.length;
        if (sincePause >= 64 * 1024) {
          sincePause = 0;
          res.pause();
          setTimeout(() => res.resume(), 2);
        }
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    }).on('error', reject);
  });
  assert.equal(received.length, BIG_RESPONSE.length);
  assert.ok(received.equals(BIG_RESPONSE), 'the body arrived intact and in order');
});

test('a client that goes away in the middle of its body costs only its own request', async (t) => {
  const { request, outbound, setTarget } = await setup(t);
  setTarget(CART);
  await new Promise<void>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }, () => {
      s.write('POST /upload HTTP/1.1\r\nhost: cart.shop\r\ncontent-length: 1000\r\n\r\npartial');
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 50);
    });
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal((await request(CART, '/after')).status, 200);
});

test('HTTP/2 streams are authorized one by one on the destination node', async (t) => {
  const cartOnly: AuthorizationPolicy = {
    namespace: 'shop', name: 'cart-api-only', selector: { app: 'cart' }, action: 'ALLOW',
    rules: [{ from: [], to: [{ ports: [], notPorts: [], methods: ['POST'], notMethods: [], paths: ['/shop.Cart/*'], notPaths: [] }] }],
  };
  const { setTarget, outbound, destinationRegistry } = await setup(t, { policies: [cartOnly] });
  setTarget({ ip: '10.96.0.31', port: 80 });
  const session = http2.connect(`http://127.0.0.1:${outbound.port}`, {
    createConnection: () => net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }),
  });
  t.after(() => session.destroy());
  const status = (path: string) => new Promise<number>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path });
    stream.on('response', (h) => resolve(Number(h[':status'])));
    stream.on('error', reject);
    stream.resume();
    stream.end('x');
  });
  assert.equal(await status('/shop.Cart/Get'), 200);
  assert.equal(await status('/shop.Admin/Delete'), 403);
  assert.equal(await status('/shop.Cart/List'), 200, 'the session keeps working after a 403');
  assert.match(await destinationRegistry.metrics(), /nodemesh_requests_total\{reporter="destination",[^}]*destination_workload="cart-v1",[^}]*connection_security_policy="mutual_tls",response_code="403"\} 1/);
});

test('a path pathological for a backtracking regex costs only its own match: a quiet request on the node is served meanwhile', async (t) => {
  // route-table.test.ts proves the table matches with this engine, in a worker with a deadline.
  assert.ok(isLinear(compileRouteRegex('/(a+)+')), 'route regexes run on the linear-time engine; otherwise this test would hang');
  const path = (value: string, type: 'Exact' | 'RegularExpression') => [{ path: { type, value }, headers: [], queryParams: [], method: '' }];
  const { outbound } = await setup(t, {
    routes: [route([
      { matches: path('/(a+)+', 'RegularExpression'), backendRefs: [backend('cart-v1')] },
      { matches: path('/quiet', 'Exact'), backendRefs: [backend('cart-v2')] },
    ])],
  });
  /** On its own connection, so neither request queues behind the other. */
  const get = (p: string) => new Promise<{ status: number; servedBy: unknown }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip, agent: false, path: p, headers: { host: 'cart.shop' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, servedBy: res.headers['x-served-by'] }));
    }).on('error', reject);
  });
  const [pathological, quiet] = await Promise.all([get(`/${'a'.repeat(10 * 1024)}!`), get('/quiet')]);
  assert.deepEqual(quiet, { status: 200, servedBy: 'cart-v2' });
  assert.equal(pathological.status, 404, 'matched to the end, and no rule matches');
});

test('an HTTPRoute rule\'s retry replaces the node\'s retried statuses and attempts, and waits its backoff', async (t) => {
  const retried = route([{ backendRefs: [backend('cart-v1')], retry: { codes: [500], attempts: 3, backoffMs: 50 } }], 'cart');
  const { request, pods } = await setup(t, { routes: [retried] });
  pods.a.failWith = [500, 500, 500];
  const started = performance.now();
  const answer = await request(CART, '/r');
  const took = performance.now() - started;
  assert.equal(answer.status, 200, `three 500s retried within 1 + 3 attempts: ${answer.body}`);
  assert.equal(pods.a.hits, 4);
  assert.ok(took >= 150, `three backoffs of 50 ms, took ${took.toFixed(0)} ms`);
  pods.a.hits = 0;
  pods.a.failWith = [503];
  assert.equal((await request(CART, '/r')).status, 503, 'the rule\'s codes replace the node\'s 503');
  assert.equal(pods.a.hits, 1);
  pods.a.hits = 0;
  pods.a.failWith = [500, 500, 500, 500];
  assert.equal((await request(CART, '/r')).status, 500, 'no more than the rule\'s attempts');
  assert.equal(pods.a.hits, 4);
});

test('an HTTP/2 RequestMirror never costs the primary a byte: each stream\'s body reaches the primary whole, also on a new session and with the mirror down', async (t) => {
  const mirror = (name: string) => ({ type: 'RequestMirror' as const, scheme: '', hostname: '', port: 0, statusCode: 0, mirror: backend(name) });
  const dead = workload('grpc-dead', '127.0.0.7', 'n2', { labels: { app: 'dead' } });
  const mirrored = { ...route([{ filters: [mirror('grpc-v2'), mirror('grpc-dead')], backendRefs: [backend('grpc-v1')] }], 'grpc'), parents: [{ namespace: 'shop', name: 'grpc', port: 0 }] };
  const { setTarget, outbound, sourceConfig } = await setup(t, { routes: [mirrored] });
  sourceConfig.apply({
    epoch: 't', version: 2, snapshot: false, removals: [],
    upserts: [
      { kind: 'workload', key: dead.uid, version: 2, workload: dead },
      { kind: 'service', key: 'shop/grpc-dead', version: 2, service: { ...service('grpc-dead', '10.96.0.33', [dead], 1), ports: [{ name: 'api', port: 80, targetPort: 1, targetPortName: '', appProtocol: 'kubernetes.io/h2c' }] } },
    ],
  });
  setTarget({ ip: '10.96.0.30', port: 80 });
  for (let round = 0; round < 3; round++) {
    // A new client session each round: the primary's upstream session may still be opening when the body arrives.
    const session = http2.connect(`http://127.0.0.1:${outbound.port}`, {
      createConnection: () => net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }),
    });
    t.after(() => session.destroy());
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => new Promise<string>((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': `/shop.Cart/Get${i}`, 'content-type': 'application/grpc' });
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => resolve(body));
      stream.on('error', reject);
      stream.write(`part-1-${i}|`);
      setImmediate(() => stream.end(`part-2-${i}`));
    })));
    answers.forEach((body, i) => {
      const seen = JSON.parse(body) as { name: string; body: string };
      assert.deepEqual([seen.name, seen.body], ['cart-v1', `part-1-${i}|part-2-${i}`]);
    });
    session.destroy();
  }
});

test('a GRPCRoute answers for itself in gRPC: UNIMPLEMENTED when no rule matches, UNAVAILABLE for an unusable backend, trailers-only', async (t) => {
  const missing = { ...backend('grpc-gone'), invalidReason: 'BackendNotFound: Service shop/grpc-gone does not exist' };
  const rpc: HttpRoute = {
    ...route([{ matches: [{ path: { type: 'Exact', value: '/shop.Cart/Get' }, headers: [], queryParams: [], method: '' }], backendRefs: [missing] }], 'grpc'),
    kind: 'GRPCRoute', parents: [{ namespace: 'shop', name: 'grpc', port: 0 }],
  };
  const { setTarget, outbound } = await setup(t, { routes: [rpc] });
  setTarget({ ip: '10.96.0.30', port: 80 });
  const session = http2.connect(`http://127.0.0.1:${outbound.port}`, {
    createConnection: () => net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip }),
  });
  t.after(() => session.destroy());
  const call = (path: string) => new Promise<{ headers: http2.IncomingHttpHeaders; ended: boolean; body: string }>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc' });
    let headers: http2.IncomingHttpHeaders = {};
    let body = '';
    stream.on('response', (h) => (headers = h));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ headers, ended: true, body }));
    stream.on('error', reject);
    stream.end();
  });
  const unmatched = await call('/shop.Cart/Put');
  assert.deepEqual([unmatched.headers[':status'], unmatched.headers['content-type'], unmatched.headers['grpc-status'], unmatched.body], [200, 'application/grpc', '12', '']);
  assert.equal(decodeURIComponent(String(unmatched.headers['grpc-message'])), 'no rule of the GRPCRoutes attached to shop/grpc matches POST /shop.Cart/Put');
  const unusable = await call('/shop.Cart/Get');
  assert.equal(unusable.headers['grpc-status'], '14');
  assert.match(decodeURIComponent(String(unusable.headers['grpc-message'])), /^GRPCRoute shop\/grpc: backend shop\/grpc-gone: BackendNotFound/);
});

test('a request target the URL parser refuses ends that request alone and gives its concurrency slot back', async (t) => {
  const limits = new SourceLimits(createMetrics(new Registry()), logger('outbound'), { maxConcurrentRequests: 1 });
  t.after(() => limits.close());
  // A route on the Service: routing parses the request's URL.
  const { request, outbound } = await setup(t, { routes: [route([{ backendRefs: [backend('cart-v1')] }])], limits });
  const raw = await new Promise<string>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: client.ip });
    let got = '';
    s.on('data', (c) => (got += c));
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
    s.write('GET http://[bad/ HTTP/1.1\r\nhost: cart.shop\r\n\r\n');
  });
  assert.doesNotMatch(raw, /^HTTP\/1.1 200/);
  for (let i = 0; i < 3; i++) assert.equal((await request(CART, '/after')).status, 200, 'the only slot is free again');
  assert.equal(limits.usage(client.uid).requests, 0);
});
