import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planCluster } from './plan.ts';
import { kubeProxyChains } from './kube-proxy.ts';

test('planCluster names namespaces by prefix and hands out node, pod and Service addresses', () => {
  const p = planCluster({
    nodes: 2,
    pods: [{ name: 'a', node: 'n1' }, { name: 'b', node: 'n2' }, { name: 'c', node: 'n1', namespace: 'other' }],
    services: [{ name: 's', selector: { app: 'a' }, ports: [{ port: 80 }] }],
  }, 'nmcx');
  assert.deepEqual(p.nodes.map((n) => [n.name, n.netns, n.ip, n.podCidr]), [['n1', 'nmcx-n1', '172.30.0.11', '10.244.1.0/24'], ['n2', 'nmcx-n2', '172.30.0.12', '10.244.2.0/24']]);
  assert.deepEqual(p.controlPlane, { netns: 'nmcx-cp', ip: '172.30.0.2' });
  assert.deepEqual(p.pods.map((x) => [x.netns, x.ip, x.hostVeth]), [['nmcx-n1-pod-default-a', '10.244.1.10', 'veth0'], ['nmcx-n2-pod-default-b', '10.244.2.10', 'veth1'], ['nmcx-n1-pod-other-c', '10.244.1.11', 'veth2']]);
  assert.deepEqual(p.namespaces.map((n) => n.name), ['default', 'other']);
  assert.equal(p.services[0]!.clusterIP, '10.96.0.10');
  assert.equal(p.pods[0]!.uid, planCluster({ nodes: 1, pods: [{ name: 'a', node: 'n1' }] }, 'nmcx').pods[0]!.uid, 'uids are stable');
});

test('planCluster rejects a bad spec naming the object and field', () => {
  const bad = (spec: Parameters<typeof planCluster>[0], re: RegExp) => assert.throws(() => planCluster(spec, 'nmcx'), re);
  bad({ nodes: 0 }, /cluster: nodes: must be an integer/);
  bad({ nodes: 1, pods: [{ name: 'a', node: 'n3' }] }, /pod default\/a: node: no node "n3"; nodes are n1/);
  bad({ nodes: 1, pods: [{ name: 'a', node: 'n1' }, { name: 'a', node: 'n1' }] }, /pod default\/a: name: declared twice/);
  bad({ nodes: 1, pods: [{ name: 'a', node: 'n1', ip: '10.244.2.5' }] }, /pod default\/a: ip: 10\.244\.2\.5 is outside node n1's pod CIDR/);
  bad({ nodes: 1, pods: [{ name: 'A', node: 'n1' }] }, /pod default\/A: name: "A" is not a DNS label/);
  assert.throws(() => planCluster({ nodes: 1 }, 'has-dash'), /cluster: prefix:/);
  bad({ nodes: 1, cni: 'weave' as never }, /cluster: cni: "weave" is not a CNI profile; profiles are bridge, routed, eni, bypass/);
});

test('planCluster wires pods as its CNI profile says, bridge by default, and never hands a pod its node\'s gateway address', () => {
  const pods = [{ name: 'a', node: 'n1' }, { name: 'b', node: 'n2' }];
  const bridge = planCluster({ nodes: 2, pods }, 'nmcx');
  assert.equal(bridge.cni, 'bridge');
  assert.deepEqual(bridge.nodes.map((n) => n.podGateway), ['10.244.1.1', '10.244.2.1']);
  for (const [cni, veth] of [['routed', 'cali'], ['eni', 'eni'], ['bypass', 'lxc']] as const) {
    const p = planCluster({ cni, nodes: 2, pods }, 'nmcx');
    assert.deepEqual([p.cni, ...p.nodes.map((n) => n.podGateway), ...p.pods.map((x) => x.hostVeth)], [cni, '169.254.1.1', '169.254.1.1', `${veth}0`, `${veth}1`]);
  }
  const full = planCluster({ nodes: 1, pods: Array.from({ length: 245 }, (_, i) => ({ name: `p${i}`, node: 'n1' })) }, 'nmcx');
  assert.ok(full.pods.every((x) => x.ip !== '10.244.1.1'));
  assert.throws(() => planCluster({ nodes: 1, pods: [...full.pods.map((x) => ({ name: x.name, node: 'n1' })), { name: 'extra', node: 'n1' }] }, 'nmcx'), /pod default\/extra: node: pod CIDR of node n1 is full/);
  for (const cni of ['bridge', 'routed'] as const) {
    assert.throws(() => planCluster({ cni, nodes: 1, pods: [{ name: 'a', node: 'n1', ip: '10.244.1.1' }] }, 'nmcx'), /pod default\/a: ip: 10\.244\.1\.1 is the gateway address of node n1's pod CIDR 10\.244\.1\.0\/24/);
  }
});

test('kube-proxy rules spread a Service over its endpoints with equal shares, resolving named target ports per pod', () => {
  const p = planCluster({
    nodes: 1,
    pods: [1, 2, 3].map((i) => ({ name: `w${i}`, node: 'n1', labels: { app: 'w' }, ports: [{ name: 'web', port: 8000 + i }] })),
    services: [{ name: 'w', selector: { app: 'w' }, ports: [{ port: 80, targetPort: 'web' }] }],
  }, 'nmcx');
  const chains = kubeProxyChains(p);
  const [entry] = chains.get('KUBE-SERVICES')!;
  assert.match(entry!, /^-A KUBE-SERVICES -d 10\.96\.0\.10\/32 -p tcp -m tcp --dport 80 -j (KUBE-SVC-[0-9A-F]{16})$/);
  const svcChain = entry!.split(' -j ')[1]!;
  const picks = chains.get(svcChain)!;
  assert.match(picks[0]!, /--probability 0\.3333333333 -j KUBE-SEP-/);
  assert.match(picks[1]!, /--probability 0\.5000000000 -j KUBE-SEP-/);
  assert.doesNotMatch(picks[2]!, /statistic/);
  const targets = picks.map((rule) => chains.get(rule.split(' -j ')[1]!)![0]!.split('--to-destination ')[1]);
  assert.deepEqual(targets, ['10.244.1.10:8001', '10.244.1.11:8002', '10.244.1.12:8003']);
});

test('planCluster takes Kubernetes node names, checked like any name', () => {
  const plan = planCluster({ nodes: 2, nodeNames: ['node-1', 'node-2'], pods: [{ name: 'p', node: 'node-2' }] }, 'nmx');
  assert.deepEqual(plan.nodes.map((n) => [n.name, n.netns, n.podCidr]), [['node-1', 'nmx-n1', '10.244.1.0/24'], ['node-2', 'nmx-n2', '10.244.2.0/24']]);
  assert.ok(plan.pods[0]!.ip.startsWith('10.244.2.'));
  assert.throws(() => planCluster({ nodes: 2, nodeNames: ['node-1'] }, 'nmx'), /cluster: nodeNames: names 1 nodes, but nodes is 2/);
  assert.throws(() => planCluster({ nodes: 1, nodeNames: ['Node_1'] }, 'nmx'), /cluster: nodeNames\[0\]/);
});
