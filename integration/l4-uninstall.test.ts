// End-to-end removal: a stopped node keeps capturing (enrolled pods must not fall
// back to plaintext while their agent restarts), `nodemesh node --uninstall`
// removes the capture, and tearing the cluster down leaves no namespace behind.
// Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { listNamespaces } from './cluster/netns.ts';
import { nodemeshBinary } from './cluster/nodemesh-binary.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter } from './e2e/pod-apps.ts';

const PORT = 7000;

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'server-a', namespace: 'shop', node: 'n2', serviceAccount: 'server' },
    { name: 'outsider', namespace: 'legacy', node: 'n1' },
  ],
};

let fx: MeshFixture;

before(async () => {
  fx = await startMeshFixture(SPEC, 'uninstall');
  await startLoggedGreeter(fx.cluster, 'shop/server-a', PORT);
});
after(() => fx?.teardown());

/** Every NODEMESH line of iptables-save in a node's namespace and in the namespaces of the pods it runs. */
async function nodemeshRules(node: string): Promise<string[]> {
  const namespaces = [fx.cluster.node(node).netns, ...fx.cluster.pods.filter((p) => p.node === node).map((p) => p.netns)];
  const lines: string[] = [];
  for (const netns of namespaces) {
    const saved = await fx.cluster.exec(netns, ['iptables-save']);
    lines.push(...saved.stdout.split('\n').filter((line) => line.includes('NODEMESH')).map((line) => `${netns}: ${line}`));
  }
  return lines;
}

test(cniTitle('a stopped node keeps its capture rules; nodemesh node --uninstall then leaves no NODEMESH line in iptables-save'), async () => {
  const serverIp = fx.cluster.pod('shop/server-a').ip;
  await expectAnswer(await attempt(fx.cluster, 'legacy/outsider', serverIp, PORT, 'meshed'), 'outsider -> server-a with n2 running', fx.mesh);
  assert.ok((await nodemeshRules('n2')).length > 0, 'n2 captures its enrolled pod while running');

  await fx.mesh.stopNode('n2');
  const kept = await nodemeshRules('n2');
  const serverNetns = fx.cluster.pod('shop/server-a').netns;
  assert.ok(kept.some((rule) => rule.startsWith(`${serverNetns}: `) && rule.includes('REDIRECT --to-ports 15006')), `n2 must keep capturing server-a (in its namespace) while its agent is down:\n${kept.join('\n')}`);
  // Captured to a port nobody listens on: the pod is not reachable around the mesh.
  const whileStopped = await attempt(fx.cluster, 'legacy/outsider', serverIp, PORT, 'bypass');
  assert.equal(whileStopped.ok, false, `reached server-a around the stopped mesh: ${JSON.stringify(whileStopped.output)}`);

  const n2 = fx.cluster.node('n2');
  await fx.cluster.exec(n2.netns, [process.execPath, await nodemeshBinary(), 'node', '--uninstall', '--pod-netns-prefix', `${n2.netns}-pod-`]);
  assert.deepEqual(await nodemeshRules('n2'), []);
  const routing = (await fx.cluster.exec(serverNetns, ['ip', 'rule', 'show'])).stdout;
  assert.doesNotMatch(routing, /lookup 133/, 'the reply route of transparent deliveries is removed from the pod too');
  assert.ok((await nodemeshRules('n1')).length > 0, '--uninstall on n2 must leave n1\'s capture alone');
  // Kubernetes networking is back to plain: the pod answers directly.
  assert.equal(
    await expectAnswer(await attempt(fx.cluster, 'legacy/outsider', serverIp, PORT, 'plain'), 'outsider -> server-a after --uninstall', fx.mesh),
    'hello from server-a\nplain',
  );
  // Idempotent: a second run finds nothing to remove and succeeds.
  await fx.cluster.exec(n2.netns, [process.execPath, await nodemeshBinary(), 'node', '--uninstall', '--pod-netns-prefix', `${n2.netns}-pod-`]);
  assert.deepEqual(await nodemeshRules('n2'), []);
});

test(cniTitle('after teardown, ip netns list shows none of the test cluster\'s namespaces'), async () => {
  const prefix = fx.cluster.prefix;
  const ours = async () => (await listNamespaces()).filter((ns) => ns.startsWith(`${prefix}-`));
  assert.ok((await ours()).length > 0, 'the cluster\'s namespaces exist before teardown');
  await fx.teardown();
  assert.deepEqual(await ours(), []);
});
