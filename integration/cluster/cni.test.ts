// The test cluster's CNI profiles (network.ts) on real namespaces: in each, a pod
// reaches a pod on another node and one on its own node by their pod IPs, and the
// servers see the client's own address; each profile's host side is what it
// claims (a bridge holding the gateway, address-less veths, the eni rules, a
// datapath the node's netfilter never sees, read from counting rules); a pod
// removed and another added in its place gets its address and is reachable.
// Needs root; fails (never skips) when namespaces cannot be created.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCluster, type Cluster } from './cluster.ts';
import { runPrefix, sweepStale } from './netns.ts';
import { POD_BRIDGE } from './network.ts';
import { CNI_PROFILES, ENI_ROUTE_TABLE, type CniProfile } from './plan.ts';
import { startServer } from './servers.ts';

const BASE = 'nmk';
const PORT = 8080;
/** Tables and chains a packet the node routes or bridges passes first; the counting rules sit there. */
const COUNTED_CHAINS = [['raw', 'PREROUTING'], ['mangle', 'PREROUTING'], ['filter', 'FORWARD']] as const;
const COUNT_TAG = 'nodemesh-test-count';

interface Seen { pod: string; remoteAddress: string }

async function get(cluster: Cluster, from: string, host: string, port = PORT): Promise<Seen> {
  const res = await cluster.exec(cluster.pod(from).netns, ['curl', '-sS', '--max-time', '5', `http://${host}:${port}/`]);
  return JSON.parse(res.stdout) as Seen;
}

/** Rules without a target in every node's first chains, counting the client's packets to each of `targets`. */
async function addCountingRules(cluster: Cluster, client: string, targets: string[]): Promise<void> {
  const from = cluster.pod(client).ip;
  const lines: string[] = [];
  for (const table of new Set(COUNTED_CHAINS.map(([t]) => t))) {
    lines.push(`*${table}`);
    for (const [t, chain] of COUNTED_CHAINS) {
      if (t !== table) continue;
      for (const target of targets) lines.push(`-I ${chain} 1 -s ${from}/32 -d ${cluster.pod(target).ip}/32 -m comment --comment ${COUNT_TAG}:${target}`);
    }
    lines.push('COMMIT');
  }
  for (const node of cluster.nodes) await cluster.exec(node.netns, ['iptables-restore', '--noflush', '-w'], { input: `${lines.join('\n')}\n` });
}

/** Packets counted per "table/chain target" on one node. */
async function countedPackets(cluster: Cluster, node: string): Promise<Map<string, number>> {
  const counted = new Map<string, number>();
  for (const table of new Set(COUNTED_CHAINS.map(([t]) => t))) {
    const saved = (await cluster.exec(cluster.node(node).netns, ['iptables-save', '-c', '-t', table])).stdout;
    for (const line of saved.split('\n')) {
      const m = new RegExp(`^\\[(\\d+):\\d+\\] -A (\\S+) .*--comment "?${COUNT_TAG}:([a-z0-9-]+)"?`).exec(line);
      if (m) counted.set(`${table}/${m[2]} ${m[3]}`, Number(m[1]));
    }
  }
  return counted;
}

async function ipv4Addresses(cluster: Cluster, netns: string, dev: string): Promise<string[]> {
  const out = (await cluster.exec(netns, ['ip', '-4', '-o', 'addr', 'show', 'dev', dev])).stdout;
  return out.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[3]!);
}

const HOST_SIDE: Record<CniProfile, string> = {
  bridge: 'host veths are ports of a bridge holding the pod CIDR\'s gateway, and the node\'s netfilter sees bridged traffic too',
  routed: 'host veths have no IPv4 address (proxy ARP) and the node\'s netfilter sees the traffic',
  eni: 'host veths have no IPv4 address, the pods\' policy-routing rules are in place and the node\'s netfilter sees the traffic',
  bypass: 'the nodes\' netfilter counts none of that traffic',
};

for (const cni of CNI_PROFILES) {
  test(`[cni=${cni}] a pod reaches a pod on another node and one on its own node, each server sees the client's pod IP; ${HOST_SIDE[cni]}`, async (t) => {
    if (cni === CNI_PROFILES[0]) await sweepStale(BASE);
    const cluster = await createCluster({
      cni,
      nodes: 2,
      pods: [
        { name: 'client', node: 'n1' },
        { name: 'near', node: 'n1', labels: { app: 'web' } },
        { name: 'far', node: 'n2', labels: { app: 'web' } },
      ],
      services: [{ name: 'web', selector: { app: 'web' }, ports: [{ port: 80, targetPort: PORT }] }],
    }, { prefix: runPrefix(BASE, cni) });
    t.after(() => cluster.teardown());
    assert.equal(cluster.cni, cni);
    const [client, near, far] = ['client', 'near', 'far'].map((name) => cluster.pod(name));
    const [n1, n2] = cluster.nodes;
    await startServer(cluster, 'near', 'http', PORT);
    await startServer(cluster, 'far', 'http', PORT);
    await addCountingRules(cluster, 'client', ['near', 'far']);

    assert.deepEqual(await get(cluster, 'client', far!.ip).then((s) => [s.pod, s.remoteAddress]), ['far', client!.ip], 'across nodes');
    assert.deepEqual(await get(cluster, 'client', near!.ip).then((s) => [s.pod, s.remoteAddress]), ['near', client!.ip], 'on one node');

    const onN1 = await countedPackets(cluster, n1!.name);
    const onN2 = await countedPackets(cluster, n2!.name);
    const counts = `n1 ${JSON.stringify([...onN1])}, n2 ${JSON.stringify([...onN2])}`;
    if (cni === 'bypass') {
      assert.ok([...onN1.values(), ...onN2.values()].every((n) => n === 0), `netfilter saw bypassed traffic: ${counts}`);
    } else {
      for (const key of ['raw/PREROUTING near', 'raw/PREROUTING far', 'filter/FORWARD near', 'filter/FORWARD far']) assert.ok(onN1.get(key)! > 0, `n1 ${key}: ${counts}`);
      assert.ok(onN2.get('raw/PREROUTING far')! > 0, `n2 raw/PREROUTING far: ${counts}`);
      // kube-proxy's DNAT needs the node's netfilter: a VIP reaches both endpoints.
      const vip = cluster.service('web').clusterIP;
      const answered = new Set<string>();
      for (let i = 0; i < 24 && answered.size < 2; i++) answered.add((await get(cluster, 'client', vip, 80)).pod);
      assert.deepEqual([...answered].sort(), ['far', 'near']);
    }

    if (cni === 'bridge') {
      assert.deepEqual(await ipv4Addresses(cluster, n1!.netns, POD_BRIDGE), [`${n1!.podGateway}/24`]);
      assert.equal(n1!.podGateway, '10.244.1.1');
      assert.match((await cluster.exec(n1!.netns, ['ip', '-o', 'link', 'show', 'dev', client!.hostVeth])).stdout, new RegExp(` master ${POD_BRIDGE} `));
      assert.deepEqual(await ipv4Addresses(cluster, client!.netns, 'eth0'), [`${client!.ip}/24`]);
    } else {
      assert.deepEqual(await ipv4Addresses(cluster, client!.netns, 'eth0'), [`${client!.ip}/32`]);
    }
    if (cni === 'routed' || cni === 'eni') {
      for (const pod of [client!, near!]) assert.deepEqual(await ipv4Addresses(cluster, n1!.netns, pod.hostVeth), [], `${pod.hostVeth} on n1`);
      assert.deepEqual(await ipv4Addresses(cluster, n2!.netns, far!.hostVeth), [], `${far!.hostVeth} on n2`);
    }
    if (cni === 'eni') {
      const rules = (await cluster.exec(n1!.netns, ['ip', 'rule', 'show'])).stdout;
      assert.match(rules, new RegExp(`^512:\\s+from all to ${client!.ip} lookup main`, 'm'));
      assert.match(rules, new RegExp(`^1536:\\s+from ${client!.ip} lookup ${ENI_ROUTE_TABLE}`, 'm'));
    }

    // What the node keeps for a pod goes with it, so its address can be handed out again.
    await cluster.removePod('near');
    const replacement = await cluster.addPod({ name: 'near-2', node: 'n1' });
    assert.equal(replacement.ip, near!.ip);
    await startServer(cluster, 'near-2', 'http', PORT);
    assert.deepEqual(await get(cluster, 'client', replacement.ip).then((s) => [s.pod, s.remoteAddress]), ['near-2', client!.ip]);
    if (cni === 'eni') assert.equal((await cluster.exec(n1!.netns, ['ip', 'rule', 'show'])).stdout.split(`from ${near!.ip} lookup`).length, 2, 'one eni rule per pod address');
  });
}
