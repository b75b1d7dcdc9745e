// The image, built and run for real: `make image` on the Debian base of
// scripts/image-base.ts (cached), then what the DaemonSet runs is checked inside
// it, a node agent from the image meshes traffic with one outside it, and the
// control plane from the image, non-root on a read-only root, serves the
// cluster. Containers run as the manifests say (integration/image/podman.ts).
// Needs root and podman (make system-deps installs it); fails, never skips,
// when either is missing. Removes its containers and its image, keeps the base.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_V8_FLAGS } from '../agent/v8-flags.ts';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import { generateConfigDir } from './cluster/config-dir.ts';
import { startMesh, type Mesh, type MeshOptions } from './cluster/mesh.ts';
import { runPrefix, sweepStale } from './cluster/netns.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { adminGet, cniTitle, E2E_CNI, scrapeMetrics } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter } from './e2e/pod-apps.ts';
import { sumOf } from './e2e/prometheus.ts';
import { buildImage, checkPodman, controlPlaneFromImage, nodeFromImage, podman, removeContainer, removeImage, type BuiltImage } from './image/podman.ts';

const PREFIX = 'nmi';
const PORT = 7000;
const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const TAG = `localhost/nodemesh-test-${process.pid}:${version}`;

// A client and a server on each node, so traffic crosses in both directions.
const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client-1', namespace: 'shop', node: 'n1', serviceAccount: 'client-1' },
    { name: 'server-1', namespace: 'shop', node: 'n1', serviceAccount: 'server-1' },
    { name: 'client-2', namespace: 'shop', node: 'n2', serviceAccount: 'client-2' },
    { name: 'server-2', namespace: 'shop', node: 'n2', serviceAccount: 'server-2' },
  ],
  services: [],
};
const principal = (sa: string) => `spiffe://cluster.local/ns/shop/sa/${sa}`;

let image: BuiltImage | undefined;

/** The cluster of one test, its mesh started with `launchers`; torn down (containers first) by the returned function. */
async function meshWith(tag: string, containers: string[], launchers: (cluster: Cluster) => MeshOptions['launchers']): Promise<{ cluster: Cluster; mesh: Mesh; teardown: () => Promise<void> }> {
  await sweepStale(PREFIX);
  const configDir = await mkdtemp(join(tmpdir(), `nodemesh-image-${tag}-`));
  let cluster: Cluster | undefined;
  const teardown = async () => {
    for (const name of containers) await removeContainer(name);
    await cluster?.teardown();
    await rm(configDir, { recursive: true, force: true });
  };
  try {
    cluster = await createCluster({ ...SPEC, cni: E2E_CNI }, { prefix: runPrefix(PREFIX, tag) });
    await generateConfigDir(cluster, configDir);
    const mesh = await startMesh(cluster, { configDir, launchers: launchers(cluster) });
    const c = cluster;
    // Runs before the mesh's own stop: the container goes even when its podman client is killed.
    c.onTeardown(async () => { for (const name of containers) await removeContainer(name); });
    return { cluster: c, mesh, teardown };
  } catch (err) {
    await teardown();
    throw err;
  }
}

/** Meshed requests both ways between the nodes; each answered, and counted as mTLS by the destination node. */
async function meshedBothWays(cluster: Cluster, mesh: Mesh): Promise<void> {
  await startLoggedGreeter(cluster, 'shop/server-1', PORT);
  await startLoggedGreeter(cluster, 'shop/server-2', PORT);
  for (const [client, server, destinationNode] of [['client-1', 'server-2', 'n2'], ['client-2', 'server-1', 'n1']] as const) {
    const text = `ping ${randomBytes(6).toString('hex')}`;
    const answer = await expectAnswer(await attempt(cluster, `shop/${client}`, cluster.pod(`shop/${server}`).ip, PORT, text), `${client} -> ${server}`, mesh);
    assert.equal(answer, `hello from ${server}\n${text}`);
    const opened = sumOf(await scrapeMetrics(cluster, destinationNode), 'nodemesh_tcp_connections_opened_total', {
      reporter: 'destination', source_principal: principal(client), destination_principal: principal(server), connection_security_policy: 'mutual_tls',
    });
    assert.ok(opened >= 1, `${destinationNode} counts ${client} -> ${server} as mutual_tls (HBONE): ${opened}`);
  }
}

/** How a container's process really runs: its uid, effective capabilities (hex) and no_new_privs, from /proc; whether its root is read-only; its node's arguments before the bundle. */
async function runsAs(container: string): Promise<{ uid: string; capEff: string; noNewPrivs: string; readOnlyRoot: boolean; nodeFlags: string[] }> {
  const [pid, readOnly] = (await podman(['inspect', '--format', '{{.State.Pid}} {{.HostConfig.ReadonlyRootfs}}', container])).stdout.trim().split(' ');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s+(\\S+)`, 'm').exec(status)?.[1] ?? '';
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  const nodeFlags = argv.slice(1, argv.indexOf('/app/dist/nodemesh.mjs'));
  return { uid: field('Uid'), capEff: field('CapEff'), noNewPrivs: field('NoNewPrivs'), readOnlyRoot: readOnly === 'true', nodeFlags };
}

describe('the image', { timeout: 30 * 60_000 }, () => {
  before(async () => {
    if (process.getuid?.() !== 0) throw new Error('the image tests run containers as root: run them as root (uid 0)');
    await checkPodman();
    image = await buildImage(TAG);
    process.stderr.write(`# image ${TAG}: ${(image.bytes / 1e6).toFixed(0)} MB; base ${image.base} ready in ${(image.baseMs / 1000).toFixed(0)} s, image built in ${(image.buildMs / 1000).toFixed(0)} s\n`);
  });
  after(async () => {
    await removeImage(image ?? { tag: TAG });
  });

  test('has on PATH what the node runs (iptables-save, iptables-restore, ip, node), the bundle, and koffi\'s native addon loads', async () => {
    const tools = await podman(['run', '--rm', '--pull=never', '--entrypoint', 'sh', TAG, '-c',
      'for p in iptables-save iptables-restore ip node; do command -v "$p" || { echo "$p not on PATH" >&2; exit 1; }; done; '
      + 'iptables-save --version; ip -V; test -f /app/dist/nodemesh.mjs && echo bundle']);
    assert.match(tools.stdout, /\/iptables-save\n.*\/iptables-restore\n.*\/ip\n.*\/node\n/s);
    assert.match(tools.stdout, /^iptables-save v1\./m);
    assert.match(tools.stdout, /^ip utility, iproute2/m);
    assert.match(tools.stdout, /^bundle$/m);
    assert.equal((await podman(['run', '--rm', '--pull=never', TAG, 'version'])).stdout, `nodemesh ${version}\n`);
    assert.match((await podman(['run', '--rm', '--pull=never', TAG, 'node', '--help'])).stdout, /^usage: nodemesh node/m);
    const koffi = await podman(['run', '--rm', '--pull=never', '--entrypoint', 'node', TAG, '-e', "const k = require('koffi'); console.log(typeof k.load, k.sizeof('int'))"]);
    assert.equal(koffi.stdout, 'function 4\n');
    const user = await podman(['image', 'inspect', '--format', '{{.Config.User}} {{json .Config.Entrypoint}}', TAG]);
    assert.equal(user.stdout.trim(), '65532:65532 ["node","/app/dist/nodemesh.mjs"]');
  });

  test(cniTitle('a node agent from the image, run as the DaemonSet runs it, captures its pods in their namespaces and meshes traffic both ways with a node outside it'), async () => {
    const container = `nodemesh-test-${process.pid}-node-n2`;
    const fx = await meshWith('node', [container], (cluster) => ({ nodes: { n2: nodeFromImage(cluster, TAG, container) } }));
    try {
      // NET_ADMIN (12), NET_RAW (13), SYS_ADMIN (21) and nothing else, as uid 0, no privilege escalation;
      // node started with the V8 flags the DaemonSet's command gives it.
      assert.deepEqual(await runsAs(container), {
        uid: '0', capEff: (1n << 12n | 1n << 13n | 1n << 21n).toString(16).padStart(16, '0'), noNewPrivs: '1', readOnlyRoot: true, nodeFlags: [...NODE_V8_FLAGS],
      });
      await meshedBothWays(fx.cluster, fx.mesh);
      // It entered its pods' namespaces (setns, /var/run/netns) and ran iptables-restore and ip there.
      const workloads = await adminGet<{ name: string; capture: string | null }[]>(fx.cluster, 'n2', '/workloads');
      assert.deepEqual(workloads.map((w) => `${w.name}: ${w.capture}`).sort(), ['client-2: in-pod', 'server-2: in-pod']);
      const inPod = fx.cluster.pod('shop/client-2').netns;
      assert.match((await fx.cluster.exec(inPod, ['iptables-save', '-t', 'nat'])).stdout, /NODEMESH/);
      assert.match((await fx.cluster.exec(inPod, ['ip', 'rule', 'show'])).stdout, /lookup 133/);
    } finally {
      await fx.teardown();
    }
  });

  test(cniTitle('the control plane from the image, as uid 65532 on a read-only root, serves the cluster: both nodes get ready and mesh'), async () => {
    const container = `nodemesh-test-${process.pid}-controlplane`;
    const fx = await meshWith('cp', [container], (cluster) => ({ controlPlane: controlPlaneFromImage(cluster, TAG, container) }));
    try {
      assert.deepEqual(await runsAs(container), { uid: '65532', capEff: '0'.repeat(16), noNewPrivs: '1', readOnlyRoot: true, nodeFlags: [] });
      assert.ok(await fx.mesh.isReady('n1') && await fx.mesh.isReady('n2'), 'both nodes are ready');
      await meshedBothWays(fx.cluster, fx.mesh);
    } finally {
      await fx.teardown();
    }
  });
});
