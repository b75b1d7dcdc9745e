// Enrollment as it happens on a running pod, on the routed (Calico-like)
// profile: the pod's open connection is left alone, and from the moment its
// node captures it none of its new traffic crosses the underlay in clear; and
// many enroll/unenroll flips leave no rule behind and no fd or memory growing in
// the node. Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterSpec, PlannedPod } from './cluster/plan.ts';
import { podObject, writeObject } from './cluster/config-dir.ts';
import { openConnection } from './cluster/servers.ts';
import { adminGet, startMeshFixture, type MeshFixture } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter } from './e2e/pod-apps.ts';
import { startCapture, tcpPackets } from './e2e/pcap.ts';
import { waitUntil } from './e2e/wait-until.ts';

const PORT = 7000;
const FLIPS = 200;

const SPEC: ClusterSpec = {
  nodes: 2,
  cni: 'routed',
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    // Opted out of its enrolled namespace until a test enrolls it.
    { name: 'app', namespace: 'shop', node: 'n1', serviceAccount: 'app', annotations: { 'nodemesh.io/mesh': 'disabled' } },
    { name: 'server', namespace: 'shop', node: 'n2', serviceAccount: 'server' },
  ],
};

let fx: MeshFixture;
before(async () => {
  fx = await startMeshFixture(SPEC, 'enroll');
  await startLoggedGreeter(fx.cluster, 'shop/server', PORT);
});
after(() => fx?.teardown());

const app = (): PlannedPod => fx.cluster.pod('shop/app');

/** Sets the app pod's annotation and waits until n1 captures it in its namespace (or no longer lists it). */
async function setEnrolled(enrolled: boolean): Promise<void> {
  const pod = app();
  pod.annotations['nodemesh.io/mesh'] = enrolled ? 'enabled' : 'disabled';
  await writeObject(fx.configDir, podObject(pod));
  await waitUntil(`n1 to ${enrolled ? 'capture' : 'release'} shop/app`, async () => {
    const workloads = await adminGet<{ name: string; capture: string | null }[]>(fx.cluster, 'n1', '/workloads');
    const listed = workloads.find((w) => w.name === 'app');
    return enrolled ? listed?.capture === 'in-pod' : listed === undefined;
  }, 10_000);
}

/** NODEMESH lines and our reply route in the app pod's namespace. */
async function meshStateInPod(): Promise<string[]> {
  const rules = (await fx.cluster.exec(app().netns, ['iptables-save'])).stdout.split('\n').filter((l) => l.includes('NODEMESH'));
  const routes = (await fx.cluster.exec(app().netns, ['ip', 'rule', 'show'])).stdout.split('\n').filter((l) => l.includes('lookup 133'));
  return [...rules, ...routes];
}

test('[cni=routed] a pod enrolled while it is sending keeps its open connection, and its new traffic crosses the underlay only as HBONE', async (t) => {
  const serverIp = fx.cluster.pod('shop/server').ip;
  const open = await openConnection(fx.cluster, app().netns, serverIp, PORT);
  t.after(() => open.close());
  await open.roundTrip('before');
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-e2e-enroll-'));
  t.after(() => rm(dir, { recursive: true, force: true }));

  await setEnrolled(true);
  const capture = await startCapture(fx.cluster, fx.cluster.node('n1').netns, 'eth0', join(dir, 'n1-eth0.pcap'));
  const secret = `after-${randomBytes(8).toString('hex')}`;
  let pcap: Buffer;
  try {
    await open.roundTrip('still-flowing');
    for (let i = 0; i < 5; i++) {
      assert.equal(await expectAnswer(await attempt(fx.cluster, 'shop/app', serverIp, PORT, secret), `app -> server #${i} after enrollment`, fx.mesh), `hello from server\n${secret}`);
    }
  } finally {
    pcap = await capture.stop();
  }
  const segments = tcpPackets(pcap).filter((s) => s.src !== fx.cluster.controlPlane.ip && s.dst !== fx.cluster.controlPlane.ip);
  // The connection opened before enrollment runs on as it was: plain TCP to port 7000.
  const old = segments.filter((s) => (s.dst === serverIp && s.dstPort === PORT && s.src === app().ip) || (s.src === serverIp && s.srcPort === PORT && s.dst === app().ip));
  assert.ok(old.some((s) => s.payload.includes('still-flowing')), 'the open connection kept flowing after enrollment');
  const ports = new Set(old.map((s) => (s.dstPort === PORT ? s.srcPort : s.dstPort)));
  assert.equal(ports.size, 1, `segments in clear of more than the one connection opened before enrollment: ports ${[...ports].join(', ')}`);
  const rest = segments.filter((s) => !old.includes(s));
  const inClear = rest.filter((s) => s.dstPort !== 15008 && s.srcPort !== 15008);
  assert.deepEqual(inClear.map((s) => `${s.src}:${s.srcPort} > ${s.dst}:${s.dstPort}`), [], 'segments of new connections not carried by HBONE');
  assert.ok(!rest.some((s) => s.payload.includes(secret)), 'a new connection\'s payload crossed the underlay in clear');
  assert.ok(rest.some((s) => s.dstPort === 15008 && s.payload.length > 0), 'no HBONE data on the underlay');
  await setEnrolled(false);
});

test(`[cni=routed] ${FLIPS} enroll/unenroll flips leave no rule in the pod or the node, and the node's fds and memory flat`, async (t) => {
  const pid = fx.mesh.nodes.get('n1')!.pid;
  const fds = async () => (await readdir(`/proc/${pid}/fd`)).length;
  const rssKiB = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]);
  // Warm up: the first flips load code and fill caches that stay.
  for (let i = 0; i < 10; i++) {
    await setEnrolled(true);
    await setEnrolled(false);
  }
  const before = { fds: await fds(), rss: await rssKiB() };
  for (let i = 0; i < FLIPS / 2; i++) {
    await setEnrolled(true);
    await setEnrolled(false);
  }
  const afterFlips = { fds: await fds(), rss: await rssKiB() };
  t.diagnostic(`fds ${before.fds} -> ${afterFlips.fds}; RSS ${Math.round(before.rss / 1024)} -> ${Math.round(afterFlips.rss / 1024)} MiB after ${FLIPS} flips`);
  assert.deepEqual(await meshStateInPod(), [], 'rules or routes left in the unenrolled pod');
  const nodeRules = (await fx.cluster.exec(fx.cluster.node('n1').netns, ['iptables-save', '-t', 'nat'])).stdout;
  assert.ok(!nodeRules.includes(app().ip), `the node still names the pod:\n${nodeRules}`);
  assert.ok(afterFlips.fds <= before.fds + 2, `fds grew from ${before.fds} to ${afterFlips.fds}`);
  // Leaks would grow with the flips; allocator and GC noise does not reach this.
  assert.ok(afterFlips.rss - before.rss < 16 * 1024, `RSS grew ${Math.round((afterFlips.rss - before.rss) / 1024)} MiB`);
});
