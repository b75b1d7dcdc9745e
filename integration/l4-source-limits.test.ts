// End-to-end per source pod limits on a real two-node mesh: a pod annotated
// `nodemesh.io/max-connections: "3"` holds three connections through its node's
// proxy and has the next ones refused (reset, counted as source_limit on its
// node), while another pod on the same node keeps connecting to the same server.
// Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClusterSpec, NamespaceSpec } from './cluster/plan.ts';
import { openConnection } from './cluster/servers.ts';
import type { OpenConnection } from './cluster/servers.ts';
import { cniTitle, scrapeMetrics, startMeshFixture, type MeshFixture } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter } from './e2e/pod-apps.ts';
import { sumOf } from './e2e/prometheus.ts';

const PORT = 7000;
const CAP = 3;
const SHOP: NamespaceSpec = { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } };

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [SHOP],
  pods: [
    { name: 'noisy', namespace: 'shop', node: 'n1', serviceAccount: 'noisy', annotations: { 'nodemesh.io/max-connections': String(CAP) } },
    { name: 'quiet', namespace: 'shop', node: 'n1', serviceAccount: 'quiet' },
    { name: 'server', namespace: 'shop', node: 'n2', labels: { app: 'server' }, serviceAccount: 'server' },
  ],
};

let fx: MeshFixture;

before(async () => {
  fx = await startMeshFixture(SPEC, 'limits');
  await startLoggedGreeter(fx.cluster, 'shop/server', PORT);
});
after(() => fx?.teardown());

const serverIp = () => fx.cluster.pod('shop/server').ip;

test(cniTitle('a pod over its max-connections annotation has its next connections refused and counted as source_limit, while a quiet pod on the same node keeps connecting'), async (t) => {
  const held: OpenConnection[] = [];
  t.after(() => Promise.all(held.map((c) => c.close())));
  for (let i = 0; i < CAP; i++) {
    const open = await openConnection(fx.cluster, fx.cluster.pod('shop/noisy').netns, serverIp(), PORT);
    held.push(open);
    await open.roundTrip(`held ${i}`);
  }
  for (let i = 0; i < 2; i++) {
    const refused = await attempt(fx.cluster, 'shop/noisy', serverIp(), PORT, 'over the cap');
    assert.equal(refused.ok, false, `connection ${CAP + i + 1} of a pod capped at ${CAP} was answered: ${refused.output}`);
  }
  for (let i = 0; i < CAP + 2; i++) {
    assert.equal(await expectAnswer(await attempt(fx.cluster, 'shop/quiet', serverIp(), PORT, `quiet ${i}`), 'quiet -> server beside the capped pod', fx.mesh), `hello from server\nquiet ${i}`);
  }
  const samples = await scrapeMetrics(fx.cluster, 'n1');
  const denied = (sa: string) => sumOf(samples, 'nodemesh_tcp_connections_denied_total', { reason: 'source_limit', source_principal: `spiffe://cluster.local/ns/shop/sa/${sa}` });
  assert.equal(denied('noisy'), 2);
  assert.equal(denied('quiet'), 0);
  // The held connections still carry data.
  await held[0]!.roundTrip('still held');
});
