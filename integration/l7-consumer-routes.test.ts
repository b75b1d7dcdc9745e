// Consumer and producer routes as GAMMA specifies them, and ReferenceGrant, end
// to end on the namespace cluster: clients of two namespaces on n1, the producer's
// pods on n2. A consumer route (in the client's namespace, its parent and backend
// the producer's Service) changes what that namespace's clients get and nothing
// for anyone else; a backendRef to another Service of the producer's namespace is
// RefNotPermitted until a ReferenceGrant there allows it, and again once the grant
// is deleted. Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { writeObject } from './cluster/config-dir.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { appEcho, openHttpSession, startHttpApp, type HttpSession } from './e2e/http-apps.ts';
import { startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { gammaRoute, waitForRoute } from './e2e/route-config.ts';
import type { KubeObject } from '../controlplane/source.ts';

const PREFIX = 'nmk';
const PORT = 8080;
const meshed = { 'nodemesh.io/mesh': 'enabled' };
const http = (name: string, selector: Record<string, string>) => ({ name, namespace: 'shop', selector, ports: [{ name: 'http', port: 80, targetPort: PORT }] });

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: meshed }, { name: 'front', annotations: meshed }, { name: 'other', annotations: meshed }],
  pods: [
    { name: 'client', namespace: 'front', node: 'n1', serviceAccount: 'client' },
    { name: 'client', namespace: 'other', node: 'n1', serviceAccount: 'client' },
    { name: 'web-v1', namespace: 'shop', node: 'n2', labels: { app: 'web', version: 'v1' }, serviceAccount: 'web' },
    { name: 'web-v2', namespace: 'shop', node: 'n2', labels: { app: 'web-v2' }, serviceAccount: 'web' },
  ],
  services: [http('web', { app: 'web' }), http('web-v2', { app: 'web-v2' })],
};

/** In front, for shop/web: every request of front's clients gets a header; /v2 goes to shop/web-v2. */
const CONSUMER: KubeObject = {
  ...gammaRoute('front', 'web-for-front', 'web', 80, [
    {
      filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-consumer', value: 'front' }] } }],
      backendRefs: [{ name: 'web', namespace: 'shop', port: 80 }],
    },
    { matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: 'web-v2', namespace: 'shop', port: 80 }] },
  ]),
};
(CONSUMER.spec as { parentRefs: Record<string, unknown>[] }).parentRefs[0]!.namespace = 'shop';

const GRANT: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1beta1', kind: 'ReferenceGrant',
  metadata: { name: 'front-routes-to-web-v2', namespace: 'shop' },
  spec: { from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'front' }], to: [{ group: '', kind: 'Service', name: 'web-v2' }] },
};

let fx: MeshFixture;

before(async () => {
  fx = await startMeshFixture(SPEC, 'consumer', PREFIX);
  await writeObject(fx.configDir, CONSUMER);
  await Promise.all(['shop/web-v1', 'shop/web-v2'].map((pod) => startHttpApp(fx.cluster, pod, PORT)));
  await waitForRoute(fx.cluster, 'n1', 'front', 'web-for-front', 'with /v2 refused', (r) => r.rules.some((x) => x.backendRefs[0]?.invalidReason.startsWith('RefNotPermitted')));
});
after(() => fx?.teardown());

async function session(client: string): Promise<HttpSession> {
  return openHttpSession(fx.cluster, client, fx.cluster.service('shop/web').clusterIP, 80);
}

test(cniTitle('a consumer route changes what its namespace\'s clients get, sent on to its own parent Service in another namespace, and nothing for other namespaces'), async (t) => {
  const front = await session('front/client');
  const other = await session('other/client');
  t.after(() => { front.close(); other.close(); });
  const fromFront = await front.send({ path: '/page' });
  assert.equal(fromFront.status, 200, fromFront.body);
  assert.deepEqual([appEcho(fromFront).pod, appEcho(fromFront).headers['x-consumer']], ['web-v1', 'front']);
  const fromOther = await other.send({ path: '/page' });
  assert.equal(fromOther.status, 200, fromOther.body);
  assert.deepEqual([appEcho(fromOther).pod, appEcho(fromOther).headers['x-consumer']], ['web-v1', undefined], 'the consumer route is not other\'s');
  const otherV2 = await other.send({ path: '/v2/page' });
  assert.equal(appEcho(otherV2).pod, 'web-v1', 'no route of other\'s: the Service itself');
});

test(cniTitle('a ReferenceGrant allows a cross-namespace backendRef, and deleting it refuses the backendRef again (500 RefNotPermitted)'), async (t) => {
  const front = await session('front/client');
  t.after(() => front.close());
  const before = await front.send({ path: '/v2/page' });
  assert.equal(before.status, 500, before.body);
  assert.match(before.body, /RefNotPermitted: backend shop\/web-v2 is in another namespace and no ReferenceGrant in shop allows HTTPRoutes of front/);
  const path = await writeObject(fx.configDir, GRANT);
  await waitForRoute(fx.cluster, 'n1', 'front', 'web-for-front', 'with /v2 allowed', (r) => r.rules.every((x) => x.backendRefs[0]?.invalidReason === ''));
  const granted = await front.send({ path: '/v2/page' });
  assert.equal(granted.status, 200, granted.body);
  assert.equal(appEcho(granted).pod, 'web-v2');
  await rm(path);
  await waitForRoute(fx.cluster, 'n1', 'front', 'web-for-front', 'with /v2 refused again', (r) => r.rules.some((x) => x.backendRefs[0]?.invalidReason.startsWith('RefNotPermitted')));
  const after = await front.send({ path: '/v2/page' });
  assert.equal(after.status, 500, after.body);
});
