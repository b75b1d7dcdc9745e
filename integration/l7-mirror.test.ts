// RequestMirror end to end on the namespace cluster: the client pod on n1, the
// primary and the mirrors on n2. A mirrored request reaches the mirror backend
// (its own pod logs it) while the client gets the primary's answer; with the
// mirror down (its pod refuses connections) the client still gets the primary's
// answer, as fast as without a mirror. Needs root; fails (never skips) when the
// cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeObject } from './cluster/config-dir.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import type { ClusterProcess } from './cluster/processes.ts';
import { appEcho, openHttpSession, startHttpApp, type HttpSession } from './e2e/http-apps.ts';
import { startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { gammaRoute, waitForRoute } from './e2e/route-config.ts';

const PREFIX = 'nmk';
const PORT = 8080;
const http = (name: string, selector: Record<string, string>) => ({ name, namespace: 'shop', selector, ports: [{ name: 'http', port: 80, targetPort: PORT }] });

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'web', namespace: 'shop', node: 'n2', labels: { app: 'web' }, serviceAccount: 'web' },
    { name: 'shadow', namespace: 'shop', node: 'n2', labels: { app: 'shadow' }, serviceAccount: 'shadow' },
    // In its Service, but nothing listens: its node refuses the connection.
    { name: 'shadow-down', namespace: 'shop', node: 'n2', labels: { app: 'shadow-down' }, serviceAccount: 'shadow' },
  ],
  services: [http('web', { app: 'web' }), http('shadow', { app: 'shadow' }), http('shadow-down', { app: 'shadow-down' })],
};

const mirrorTo = (name: string) => ({ type: 'RequestMirror', requestMirror: { backendRef: { name, port: 80 } } });

const ROUTE = gammaRoute('shop', 'web', 'web', 80, [
  { matches: [{ path: { type: 'PathPrefix', value: '/mirrored' } }], filters: [mirrorTo('shadow')], backendRefs: [{ name: 'web', port: 80 }] },
  { matches: [{ path: { type: 'PathPrefix', value: '/down' } }], filters: [mirrorTo('shadow-down')], backendRefs: [{ name: 'web', port: 80 }] },
  { backendRefs: [{ name: 'web', port: 80 }] },
]);

let fx: MeshFixture;
let shadow: ClusterProcess;

before(async () => {
  fx = await startMeshFixture(SPEC, 'mirror', PREFIX);
  await writeObject(fx.configDir, ROUTE);
  [, shadow] = await Promise.all([startHttpApp(fx.cluster, 'shop/web', PORT), startHttpApp(fx.cluster, 'shop/shadow', PORT, { log: true })]);
  await waitForRoute(fx.cluster, 'n1', 'shop', 'web', 'with its mirrors', (r) => r.rules.length === 3);
});
after(() => fx?.teardown());

async function session(): Promise<HttpSession> {
  return openHttpSession(fx.cluster, 'shop/client', fx.cluster.service('shop/web').clusterIP, 80);
}

test(cniTitle('a mirrored request reaches the mirror backend on the other node while the client gets the primary\'s answer'), async (t) => {
  const s = await session();
  t.after(() => s.close());
  for (const n of [1, 2, 3]) {
    const answer = await s.send({ path: `/mirrored/${n}?q=${n}`, headers: { 'x-request': String(n) } });
    assert.equal(answer.status, 200, answer.body);
    assert.equal(appEcho(answer).pod, 'web', 'the client gets the primary\'s answer');
    await shadow.waitForOutput(`served GET /mirrored/${n}?q=${n} bytes=0`, 5_000);
  }
  const plain = await s.send({ path: '/other' });
  assert.equal(appEcho(plain).pod, 'web');
  assert.doesNotMatch(shadow.stdout, /served GET \/other/, 'only the mirrored rule copies');
});

test(cniTitle('with the mirror down the client still gets the primary\'s answer, undelayed'), async (t) => {
  const s = await session();
  t.after(() => s.close());
  const times: number[] = [];
  for (let n = 0; n < 20; n++) {
    const started = performance.now();
    const answer = await s.send({ path: `/down/${n}` });
    times.push(performance.now() - started);
    assert.equal(answer.status, 200, answer.body);
    assert.equal(appEcho(answer).pod, 'web');
  }
  times.sort((a, b) => a - b);
  t.diagnostic(`median ${times[10]!.toFixed(1)} ms, slowest ${times[19]!.toFixed(1)} ms over 20 requests with a refused mirror`);
  assert.ok(times[19]! < 1_000, `the slowest request took ${times[19]!.toFixed(0)} ms`);
});
