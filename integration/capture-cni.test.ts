// Capture on the CNIs clusters run: the same meshed traffic on every profile of
// the test cluster — a bridge with a gateway address (flannel, kindnet), routed
// address-less veths with proxy ARP (Calico), address-less veths with per-pod
// policy routing (AWS VPC CNI) and a datapath that bypasses the node's netfilter
// (eBPF host routing). Enrolled pods are captured inside their own namespaces,
// so each profile must mesh: HBONE on port 15008 only across the underlay, the
// client's own address at the server, permissive and strict mTLS for pods
// outside the mesh. Needs root; fails (never skips) when a cluster cannot be set up.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterSpec, CniProfile } from './cluster/plan.ts';
import { adminGet, startMeshFixture, type MeshFixture } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter, type LoggedGreeter } from './e2e/pod-apps.ts';
import { startCapture, tcpPackets } from './e2e/pcap.ts';

const PORT = 7000;

const spec = (cni: CniProfile): ClusterSpec => ({
  nodes: 2,
  cni,
  namespaces: [
    { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } },
    { name: 'vault', annotations: { 'nodemesh.io/mesh': 'enabled', 'nodemesh.io/mtls-mode': 'strict' } },
  ],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'server', namespace: 'shop', node: 'n2', serviceAccount: 'server' },
    // The same-node path: a server beside the client.
    { name: 'neighbour', namespace: 'shop', node: 'n1', serviceAccount: 'server' },
    { name: 'safe', namespace: 'vault', node: 'n2', serviceAccount: 'safe' },
    { name: 'outsider', namespace: 'legacy', node: 'n1' },
  ],
});

interface WorkloadView {
  name: string;
  capture: string | null;
}

for (const cni of ['routed', 'eni', 'bypass', 'bridge'] as const) {
  describe(`[cni=${cni}]`, () => {
    let fx: MeshFixture;
    const greeters = new Map<string, LoggedGreeter>();
    before(async () => {
      fx = await startMeshFixture(spec(cni), cni.replace(/[^a-z]/g, ''));
      for (const pod of ['shop/server', 'shop/neighbour', 'vault/safe']) greeters.set(pod, await startLoggedGreeter(fx.cluster, pod, PORT));
    });
    after(() => fx?.teardown());
    const ip = (pod: string) => fx.cluster.pod(pod).ip;
    /** The source addresses the greeter in `pod` has accepted connections from. */
    const acceptedFrom = (pod: string) => greeters.get(pod)!.process.stdout.split('\n')
      .filter((l) => l.startsWith('accepted from ')).map((l) => l.slice('accepted from '.length).replace(/:\d+$/, '').replace(/^::ffff:/, ''));

    test(`[cni=${cni}] every enrolled pod is captured inside its own namespace`, async () => {
      for (const node of ['n1', 'n2']) {
        const workloads = await adminGet<WorkloadView[]>(fx.cluster, node, '/workloads');
        assert.ok(workloads.length > 0, `${node} runs enrolled pods`);
        assert.deepEqual(workloads.filter((w) => w.capture !== 'in-pod').map((w) => `${w.name}: ${w.capture}`), [], `${node}: pods not captured in-pod`);
      }
    });

    test(`[cni=${cni}] an enrolled client reaches an enrolled server across nodes and on the same node; the underlay carries port 15008 only, no payload in clear`, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), `nodemesh-e2e-${cni}-`));
      t.after(() => rm(dir, { recursive: true, force: true }));
      const capture = await startCapture(fx.cluster, fx.cluster.node('n1').netns, 'eth0', join(dir, 'n1-eth0.pcap'));
      const secret = `meshed-${randomBytes(8).toString('hex')}`;
      let pcap: Buffer;
      try {
        assert.equal(await expectAnswer(await attempt(fx.cluster, 'shop/client', ip('shop/server'), PORT, secret), 'client -> server (across nodes)', fx.mesh), `hello from server\n${secret}`);
        assert.equal(await expectAnswer(await attempt(fx.cluster, 'shop/client', ip('shop/neighbour'), PORT, secret), 'client -> neighbour (same node)', fx.mesh), `hello from neighbour\n${secret}`);
      } finally {
        pcap = await capture.stop();
      }
      const controlPlane = fx.cluster.controlPlane.ip;
      const segments = tcpPackets(pcap).filter((s) => s.src !== controlPlane && s.dst !== controlPlane);
      const offPort = segments.filter((s) => !((s.dstPort === 15008 && s.dst === ip('shop/server')) || (s.srcPort === 15008 && s.src === ip('shop/server'))));
      assert.deepEqual(offPort.map((s) => `${s.src}:${s.srcPort} > ${s.dst}:${s.dstPort}`), [], 'packets on the underlay that are not HBONE to the server');
      assert.ok(segments.some((s) => s.payload.length > 0), 'no HBONE data seen on the underlay');
      assert.ok(!segments.some((s) => s.payload.includes(secret)), 'the payload crossed the underlay in clear');
    });

    test(`[cni=${cni}] the server's accepted socket shows the client pod's own IP, meshed across nodes, on the same node and in plaintext`, async () => {
      await expectAnswer(await attempt(fx.cluster, 'shop/client', ip('shop/server'), PORT, 'who'), 'client -> server', fx.mesh);
      await expectAnswer(await attempt(fx.cluster, 'shop/client', ip('shop/neighbour'), PORT, 'who'), 'client -> neighbour', fx.mesh);
      await expectAnswer(await attempt(fx.cluster, 'legacy/outsider', ip('shop/server'), PORT, 'who'), 'outsider -> server', fx.mesh);
      assert.equal(acceptedFrom('shop/server').at(-2), ip('shop/client'), 'meshed across nodes');
      assert.equal(acceptedFrom('shop/neighbour').at(-1), ip('shop/client'), 'meshed on the same node');
      assert.equal(acceptedFrom('shop/server').at(-1), ip('legacy/outsider'), 'plaintext from outside the mesh');
    });

    test(`[cni=${cni}] a pod outside the mesh reaches an enrolled pod in permissive mode and is refused in strict mode`, async () => {
      const permissive = await attempt(fx.cluster, 'legacy/outsider', ip('shop/server'), PORT, 'plain');
      assert.equal(await expectAnswer(permissive, 'outsider -> shop/server (permissive)', fx.mesh), 'hello from server\nplain');
      const before = greeters.get('vault/safe')!.accepted();
      const strict = await attempt(fx.cluster, 'legacy/outsider', ip('vault/safe'), PORT, 'plain');
      assert.equal(strict.ok, false, `strict mTLS let plaintext through: ${JSON.stringify(strict)}`);
      assert.equal(greeters.get('vault/safe')!.accepted(), before, 'nothing reached the strict pod');
      // The control: a meshed client does reach the strict pod.
      assert.equal(await expectAnswer(await attempt(fx.cluster, 'shop/client', ip('vault/safe'), PORT, 'meshed'), 'client -> vault/safe', fx.mesh), 'hello from safe\nmeshed');
    });
  });
}
