// HTTPRoute behaviour end to end on the namespace cluster: the client pod on n1,
// every backend on n2, traffic captured by iptables and carried in HBONE. Header
// and path-prefix matches, RequestRedirect and URLRewrite as the Gateway API
// specifies them; a route edited in the control plane's directory steering the
// next request of a held keep-alive connection while a slow request on it
// completes; an endpoint refusing connections retried onto a healthy one; and a
// request timeout answered 504. The nodes count requests on the destination
// too (--destination-request-metrics), where the refusing endpoint's attempts
// show. Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeObject } from './cluster/config-dir.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { appEcho, openHttpSession, startHttpApp, type HttpSession } from './e2e/http-apps.ts';
import { scrapeMetrics, startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { sumOf } from './e2e/prometheus.ts';
import { gammaRoute, waitForRoute } from './e2e/route-config.ts';

const PREFIX = 'nmk';
const PORT = 8080;
const http = (name: string, selector: Record<string, string>) => ({ name, namespace: 'shop', selector, ports: [{ name: 'http', port: 80, targetPort: PORT }] });

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'web-v1', namespace: 'shop', node: 'n2', labels: { app: 'web', version: 'v1' }, serviceAccount: 'web' },
    { name: 'web-v2', namespace: 'shop', node: 'n2', labels: { app: 'web', version: 'v2' }, serviceAccount: 'web' },
    { name: 'flaky-up', namespace: 'shop', node: 'n2', labels: { app: 'flaky' }, serviceAccount: 'flaky' },
    // In the Service, but nothing listens: its node refuses the connection.
    { name: 'flaky-down', namespace: 'shop', node: 'n2', labels: { app: 'flaky' }, serviceAccount: 'flaky' },
  ],
  services: [
    http('web', { app: 'web' }),
    http('web-v1', { app: 'web', version: 'v1' }),
    http('web-v2', { app: 'web', version: 'v2' }),
    http('live', { app: 'web' }),
    http('flaky', { app: 'flaky' }),
    http('slow', { app: 'web', version: 'v1' }),
  ],
};

const to = (name: string) => [{ name, port: 80 }];

const MATCHES = gammaRoute('shop', 'web-matches', 'web', 80, [
  { matches: [{ headers: [{ name: 'x-version', value: 'v2' }] }], backendRefs: to('web-v2') },
  { matches: [{ path: { type: 'PathPrefix', value: '/shop' } }], backendRefs: to('web-v1') },
  {
    matches: [{ path: { type: 'PathPrefix', value: '/old' } }],
    filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' }, statusCode: 301 } }],
  },
  {
    matches: [{ path: { type: 'PathPrefix', value: '/api' } }],
    filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'backend.shop.internal', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2/api' } } }],
    backendRefs: to('web-v1'),
  },
]);

const liveRoute = (backend: string) => gammaRoute('shop', 'live', 'live', 80, [{ backendRefs: to(backend) }]);

const SLOW = gammaRoute('shop', 'slow', 'slow', 80, [{ timeouts: { request: '500ms' }, backendRefs: to('slow') }]);

let fx: MeshFixture;

before(async () => {
  fx = await startMeshFixture(SPEC, 'route', PREFIX, { nodeArgs: ['--destination-request-metrics'] });
  for (const route of [MATCHES, liveRoute('web-v1'), SLOW]) await writeObject(fx.configDir, route);
  await Promise.all(['shop/web-v1', 'shop/web-v2', 'shop/flaky-up'].map((pod) => startHttpApp(fx.cluster, pod, PORT)));
  await waitForRoute(fx.cluster, 'n1', 'shop', 'web-matches', 'with its four rules', (r) => r.rules.length === 4);
  await waitForRoute(fx.cluster, 'n1', 'shop', 'live', 'to web-v1', (r) => r.rules[0]?.backendRefs[0]?.name === 'web-v1');
  await waitForRoute(fx.cluster, 'n1', 'shop', 'slow', 'with its 500 ms timeout', (r) => r.rules[0]?.requestTimeoutMs === 500);
});
after(() => fx?.teardown());

const vip = (service: string) => fx.cluster.service(`shop/${service}`).clusterIP;

async function session(service: string): Promise<HttpSession> {
  return openHttpSession(fx.cluster, 'shop/client', vip(service), 80);
}

test(cniTitle('header and path-prefix matches pick the backend across nodes, by Gateway API precedence; no match is 404'), async (t) => {
  const s = await session('web');
  t.after(() => s.close());
  const served = async (path: string, headers?: Record<string, string>) => {
    const answer = await s.send({ path, headers });
    return answer.status === 200 ? `${appEcho(answer).pod} ${appEcho(answer).path}` : String(answer.status);
  };
  assert.equal(await served('/other', { 'x-version': 'v2' }), 'web-v2 /other');
  assert.equal(await served('/other'), '404', 'routes attach to web but none matches: the spec says 404');
  assert.equal(await served('/shop'), 'web-v1 /shop');
  assert.equal(await served('/shop/cart?id=7'), 'web-v1 /shop/cart?id=7');
  assert.equal(await served('/shopping'), '404', 'PathPrefix matches whole path elements: /shop does not match /shopping');
  // The longest path prefix outranks a header match (the header rule's implicit prefix is "/").
  assert.equal(await served('/shop/cart', { 'x-version': 'v2' }), 'web-v1 /shop/cart');
});

test(cniTitle('a RequestRedirect answers 301 from the mesh with the prefix replaced and the query kept'), async (t) => {
  const s = await session('web');
  t.after(() => s.close());
  const answer = await s.send({ path: '/old/page?q=1', headers: { host: 'web.shop' } });
  assert.equal(answer.status, 301, answer.body);
  assert.equal(answer.headers.location, 'http://web.shop/new/page?q=1');
  const exact = await s.send({ path: '/old', headers: { host: 'web.shop:80' } });
  assert.equal(exact.headers.location, 'http://web.shop/new', 'the well-known port stays out of Location');
});

test(cniTitle('a URLRewrite replaces the matched prefix and the Host before the request reaches the pod on the other node'), async (t) => {
  const s = await session('web');
  t.after(() => s.close());
  const answer = await s.send({ path: '/api/items?x=1', headers: { host: 'web.shop' } });
  const echo = appEcho(answer);
  assert.equal(answer.status, 200);
  assert.equal(echo.pod, 'web-v1');
  assert.equal(echo.path, '/v2/api/items?x=1');
  assert.equal(echo.headers.host, 'backend.shop.internal');
  assert.equal(echo.headers['x-forwarded-for'], fx.cluster.pod('shop/client').ip);
});

test(cniTitle('a route edited in the source directory steers the next request of a held keep-alive connection, and the slow request in flight completes'), async (t) => {
  const s = await session('live');
  t.after(async () => {
    await s.close();
    await writeObject(fx.configDir, liveRoute('web-v1'));
  });
  const first = await s.send({ path: '/before' });
  assert.equal(appEcho(first).pod, 'web-v1');
  const inFlight = s.send({ path: '/delay/1000' });
  const editedAt = performance.now();
  await writeObject(fx.configDir, liveRoute('web-v2'));
  await waitForRoute(fx.cluster, 'n1', 'shop', 'live', 'to web-v2', (r) => r.rules[0]?.backendRefs[0]?.name === 'web-v2');
  const propagatedMs = performance.now() - editedAt;
  assert.ok(!s.process.stdout.includes('"id":"r2"'), `the slow request must still be in flight when n1 has the new route (took ${propagatedMs.toFixed(0)} ms)`);
  const slow = await inFlight;
  assert.equal(slow.status, 200, slow.error ?? slow.body);
  assert.equal(appEcho(slow).pod, 'web-v1', 'the request in flight stays with the backend it was sent to');
  const next = await s.send({ path: '/after' });
  assert.equal(appEcho(next).pod, 'web-v2', 'the next request follows the edited route');
  assert.deepEqual([slow.localPort, next.localPort], [first.localPort, first.localPort], 'all three requests share one connection: the edit dropped nothing');
  t.diagnostic(`route edit reached n1 in ${propagatedMs.toFixed(0)} ms`);
});

test(cniTitle('an endpoint refusing connections is retried onto the healthy one and then avoided: 50 requests all answer 200'), async (t) => {
  const s = await session('flaky');
  t.after(() => s.close());
  const statuses = new Map<string, number>();
  for (let i = 0; i < 50; i++) {
    const answer = await s.send({ path: `/r/${i}` });
    const key = answer.status === 200 ? `200 ${appEcho(answer).pod}` : `${answer.status} ${answer.body || answer.error}`;
    statuses.set(key, (statuses.get(key) ?? 0) + 1);
  }
  assert.deepEqual([...statuses], [['200 flaky-up', 50]]);
  const refused = sumOf(await scrapeMetrics(fx.cluster, 'n2'), 'nodemesh_requests_total', { reporter: 'destination', destination_service: 'flaky.shop.svc.cluster.local', response_code: '503' });
  assert.ok(refused >= 1, 'flaky-down must have been tried (and its refusal answered 503 by n2) at least once');
  // Two endpoints: power-of-two-choices compares both every time, so once the refusal
  // is counted against flaky-down it is not picked again within this test.
  assert.ok(refused <= 2, `n1 kept sending to the refusing endpoint: ${refused} of 50 requests went there first`);
  t.diagnostic(`attempts on the refusing endpoint, each retried: ${refused}`);
});

test(cniTitle('a backend slower than the route\'s request timeout answers 504 at about the timeout'), async (t) => {
  const s = await session('slow');
  t.after(() => s.close());
  const answer = await s.send({ path: '/delay/2000' });
  assert.equal(answer.status, 504, answer.body);
  assert.ok(answer.ms >= 450 && answer.ms < 1500, `504 after ${answer.ms.toFixed(0)} ms; the timeout is 500 ms and the server answers after 2000 ms`);
  t.diagnostic(`504 after ${answer.ms.toFixed(0)} ms (timeout 500 ms)`);
  const again = await s.send({ path: '/fast' });
  assert.equal(again.status, 200, 'the client connection serves the next request after a 504');
});
