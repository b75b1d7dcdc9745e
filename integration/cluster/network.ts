// Builds the network of a planned cluster from `ip` commands. The underlay is a
// bridge in its own namespace; nodes route pod CIDRs to each other over it; pods
// hang off their node on Calico-style routed veths (no bridge per node), so even
// same-node pod-to-pod traffic passes the node's PREROUTING. Nothing connects to
// the machine's own namespace.

import type { ClusterPlan, PlannedPod } from './plan.ts';
import { POD_GATEWAY, SERVICE_CIDR, UNDERLAY_CIDR_BITS } from './plan.ts';
import { run } from './netns.ts';

function ipIn(netns: string, ...args: string[]): Promise<string> {
  return run(['ip', '-n', netns, ...args]);
}

function sysctl(netns: string, setting: string): Promise<string> {
  return run(['ip', 'netns', 'exec', netns, 'sysctl', '-qw', setting]);
}

async function addNamespace(netns: string): Promise<void> {
  await run(['ip', 'netns', 'add', netns]);
  await ipIn(netns, 'link', 'set', 'lo', 'up');
}

/** A namespace with eth0 on the underlay bridge at `ip`. */
async function attachToUnderlay(plan: ClusterPlan, netns: string, bridgePort: string, ip: string): Promise<void> {
  const ul = plan.underlay.netns;
  await addNamespace(netns);
  await ipIn(ul, 'link', 'add', bridgePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
  await ipIn(ul, 'link', 'set', bridgePort, 'master', plan.underlay.bridge, 'up');
  await ipIn(netns, 'addr', 'add', `${ip}/${UNDERLAY_CIDR_BITS}`, 'dev', 'eth0');
  await ipIn(netns, 'link', 'set', 'eth0', 'up');
}

export async function buildUnderlay(plan: ClusterPlan): Promise<void> {
  const ul = plan.underlay.netns;
  await addNamespace(ul);
  await ipIn(ul, 'link', 'add', plan.underlay.bridge, 'type', 'bridge');
  await ipIn(ul, 'link', 'set', plan.underlay.bridge, 'up');
  await attachToUnderlay(plan, plan.controlPlane.netns, 'cp', plan.controlPlane.ip);
}

export async function buildNodes(plan: ClusterPlan): Promise<void> {
  await Promise.all(plan.nodes.map(async (node) => {
    await attachToUnderlay(plan, node.netns, node.name, node.ip);
    await sysctl(node.netns, 'net.ipv4.ip_forward=1');
    for (const other of plan.nodes) {
      if (other !== node) await ipIn(node.netns, 'route', 'add', other.podCidr, 'via', other.ip);
    }
    // Locally originated connections to a VIP need some route before OUTPUT's DNAT rewrites them.
    await ipIn(node.netns, 'route', 'add', SERVICE_CIDR, 'dev', 'eth0');
  }));
}

/** A pod: eth0 with podIP/32 and a default route via the link-local gateway on its node's veth. */
export async function buildPod(plan: ClusterPlan, pod: PlannedPod): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  await addNamespace(pod.netns);
  await ipIn(node.netns, 'link', 'add', pod.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns);
  await ipIn(pod.netns, 'addr', 'add', `${pod.ip}/32`, 'dev', 'eth0');
  await ipIn(pod.netns, 'link', 'set', 'eth0', 'up');
  await ipIn(pod.netns, 'route', 'add', 'default', 'via', POD_GATEWAY, 'dev', 'eth0', 'onlink');
  // The gateway address on the node side answers the pod's ARP and gives REDIRECT an address to redirect to.
  await ipIn(node.netns, 'addr', 'add', `${POD_GATEWAY}/32`, 'dev', pod.hostVeth);
  await ipIn(node.netns, 'link', 'set', pod.hostVeth, 'up');
  await ipIn(node.netns, 'route', 'add', `${pod.ip}/32`, 'dev', pod.hostVeth, 'scope', 'link');
}
