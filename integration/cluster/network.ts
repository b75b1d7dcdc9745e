// Builds the network of a planned cluster from `ip`, `tc` and `sysctl` commands,
// after its CNI profile (plan.ts), so the product meets the host sides real
// clusters have. Common to every profile: the underlay is a bridge in its own
// namespace with a router on it (every node's default route, and the one next hop
// of `eni` and `bypass` pod traffic; it never sends redirects); nodes forward.
// How a pod hangs off its node:
//
// - bridge (flannel, kindnet): the node's pods are ports of the bridge cni0, which
//   holds the pod CIDR's gateway (10.244.i.1/24); pods have podIP/24. Nodes route
//   each other's pod CIDRs directly. bridge-nf-call-iptables=1 (br_netfilter, which
//   kube-proxy needs on bridge CNIs) passes same-node, bridged traffic through the
//   node's iptables too.
// - routed (Calico): pods have podIP/32 and a default route via 169.254.1.1 onlink;
//   host veths have no address and answer ARP by proxy_arp (without delay); the
//   node routes each pod's /32 to its veth.
// - eni (AWS VPC CNI): routed, plus the CNI's policy routing per pod: `to podIP
//   lookup main` (priority 512) and `from podIP lookup 2` (1536), where table 2
//   routes via the uplink to the underlay router.
// - bypass (an eBPF datapath, emulated with tc's u32 and mirred only): redirects at
//   ingress move pod traffic between its host veth and the node's uplink, so the
//   node's routing and netfilter never see it. The host veth has the router's MAC
//   and the pod's eth0 the uplink's, so no frame needs rewriting; pods on one node
//   reach each other through the router. Service VIPs are not reachable from pods
//   (an eBPF datapath's own Service handling is not emulated).
//
// Nothing connects to the machine's own namespace.

import type { ClusterPlan, PlannedNode, PlannedPod } from './plan.ts';
import { ENI_ROUTE_TABLE, UNDERLAY_CIDR_BITS } from './plan.ts';
import { ClusterCommandError, run } from './netns.ts';

/** The bridge profile's bridge in each node's namespace. */
export const POD_BRIDGE = 'cni0';
/** The eni profile's rule priorities, as the AWS VPC CNI installs them. */
const ENI_TO_POD_PRIORITY = 512;
const ENI_FROM_POD_PRIORITY = 1536;

/** A locally administered MAC made of an IPv4 address, so a link's MAC is known before it exists. */
export function macOf(ip: string): string {
  return ['02', '00', ...ip.split('.').map((octet) => Number(octet).toString(16).padStart(2, '0'))].join(':');
}

function ipIn(netns: string, ...args: string[]): Promise<string> {
  return run(['ip', '-n', netns, ...args]);
}

function tcIn(netns: string, ...args: string[]): Promise<string> {
  return run(['tc', '-n', netns, ...args]);
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
  await ipIn(netns, 'link', 'set', 'eth0', 'address', macOf(ip));
  await ipIn(netns, 'addr', 'add', `${ip}/${UNDERLAY_CIDR_BITS}`, 'dev', 'eth0');
  await ipIn(netns, 'link', 'set', 'eth0', 'up');
}

export async function buildUnderlay(plan: ClusterPlan): Promise<void> {
  const { netns: ul, bridge, router } = plan.underlay;
  await addNamespace(ul);
  await ipIn(ul, 'link', 'add', bridge, 'address', macOf(router), 'type', 'bridge');
  await ipIn(ul, 'addr', 'add', `${router}/${UNDERLAY_CIDR_BITS}`, 'dev', bridge);
  await ipIn(ul, 'link', 'set', bridge, 'up');
  await sysctl(ul, 'net.ipv4.ip_forward=1');
  // Traffic the router hairpins between two nodes stays on it: bypass needs its one next hop.
  await sysctl(ul, 'net.ipv4.conf.all.send_redirects=0');
  await sysctl(ul, `net.ipv4.conf.${bridge}.send_redirects=0`);
  await attachToUnderlay(plan, plan.controlPlane.netns, 'cp', plan.controlPlane.ip);
}

export async function buildNodes(plan: ClusterPlan): Promise<void> {
  await Promise.all(plan.nodes.map(async (node) => {
    await attachToUnderlay(plan, node.netns, node.name, node.ip);
    await sysctl(node.netns, 'net.ipv4.ip_forward=1');
    await ipIn(plan.underlay.netns, 'route', 'add', node.podCidr, 'via', node.ip);
    // Also the route of connections the node makes to a VIP before OUTPUT's DNAT rewrites them.
    await ipIn(node.netns, 'route', 'add', 'default', 'via', plan.underlay.router);
    if (plan.cni !== 'bypass') {
      for (const other of plan.nodes) {
        if (other !== node) await ipIn(node.netns, 'route', 'add', other.podCidr, 'via', other.ip);
      }
    }
    await buildNodeSide(plan, node);
  }));
}

async function buildNodeSide(plan: ClusterPlan, node: PlannedNode): Promise<void> {
  switch (plan.cni) {
    case 'bridge': {
      await ipIn(node.netns, 'link', 'add', POD_BRIDGE, 'address', macOf(node.podGateway), 'type', 'bridge');
      await ipIn(node.netns, 'addr', 'add', `${node.podGateway}/${cidrBits(node.podCidr)}`, 'dev', POD_BRIDGE);
      await ipIn(node.netns, 'link', 'set', POD_BRIDGE, 'up');
      const setting = 'net.bridge.bridge-nf-call-iptables=1';
      await sysctl(node.netns, setting).catch((err: ClusterCommandError) => {
        throw new ClusterCommandError(err.argv, `cannot set ${setting}: the bridge profile needs br_netfilter loaded (as kube-proxy does on bridge CNIs), or bridged same-node traffic and Service replies skip iptables; load it or choose another cni profile`, err.stderr);
      });
      return;
    }
    case 'routed':
      return;
    case 'eni': {
      const table = String(ENI_ROUTE_TABLE);
      await ipIn(node.netns, 'route', 'add', plan.underlay.router, 'dev', 'eth0', 'scope', 'link', 'table', table);
      await ipIn(node.netns, 'route', 'add', 'default', 'via', plan.underlay.router, 'dev', 'eth0', 'table', table);
      return;
    }
    case 'bypass':
      await tcIn(node.netns, 'qdisc', 'add', 'dev', 'eth0', 'clsact');
  }
}

function cidrBits(cidr: string): string {
  return cidr.split('/')[1]!;
}

/** The u32 filter on the node's uplink that hands a bypass pod its traffic: one priority per pod, so it can be deleted alone. */
function bypassUplinkPref(pod: PlannedPod): string {
  return String(100 + Number(pod.hostVeth.replace(/^\D+/, '')));
}

/** A pod: its namespace, the veth to its node and what its node's CNI profile puts on both ends. */
export async function buildPod(plan: ClusterPlan, pod: PlannedPod): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  await addNamespace(pod.netns);
  await ipIn(node.netns, 'link', 'add', pod.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns);
  switch (plan.cni) {
    case 'bridge':
      await ipIn(pod.netns, 'addr', 'add', `${pod.ip}/${cidrBits(node.podCidr)}`, 'dev', 'eth0');
      // A MAC made of the pod's IP, as the CNI bridge plugin sets it: a pod that gets a removed pod's
      // address answers to the MAC its neighbours still have cached for it.
      await ipIn(pod.netns, 'link', 'set', 'eth0', 'address', macOf(pod.ip));
      await ipIn(pod.netns, 'link', 'set', 'eth0', 'up');
      await ipIn(pod.netns, 'route', 'add', 'default', 'via', node.podGateway);
      await ipIn(node.netns, 'link', 'set', pod.hostVeth, 'master', POD_BRIDGE, 'up');
      return;
    case 'routed':
      await linkLocalRoutedPod(node, pod);
      await proxyArpHostVeth(node, pod);
      return;
    case 'eni':
      await linkLocalRoutedPod(node, pod);
      await proxyArpHostVeth(node, pod);
      await ipIn(node.netns, 'rule', 'add', 'to', pod.ip, 'lookup', 'main', 'priority', String(ENI_TO_POD_PRIORITY));
      await ipIn(node.netns, 'rule', 'add', 'from', pod.ip, 'lookup', String(ENI_ROUTE_TABLE), 'priority', String(ENI_FROM_POD_PRIORITY));
      return;
    case 'bypass': {
      const routerMac = macOf(plan.underlay.router);
      await ipIn(node.netns, 'link', 'set', pod.hostVeth, 'address', routerMac);
      await ipIn(pod.netns, 'link', 'set', 'eth0', 'address', macOf(node.ip));
      await linkLocalRoutedPod(node, pod);
      // The datapath answers for the gateway itself; here a permanent neighbour stands in for it.
      await ipIn(pod.netns, 'neigh', 'add', node.podGateway, 'lladdr', routerMac, 'dev', 'eth0', 'nud', 'permanent');
      await ipIn(node.netns, 'link', 'set', pod.hostVeth, 'up');
      await tcIn(node.netns, 'qdisc', 'add', 'dev', pod.hostVeth, 'clsact');
      await tcIn(node.netns, 'filter', 'add', 'dev', pod.hostVeth, 'ingress', 'protocol', 'ip', 'pref', '1', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', 'eth0');
      await tcIn(node.netns, 'filter', 'add', 'dev', 'eth0', 'ingress', 'protocol', 'ip', 'pref', bypassUplinkPref(pod), 'u32', 'match', 'ip', 'dst', `${pod.ip}/32`, 'action', 'mirred', 'egress', 'redirect', 'dev', pod.hostVeth);
      // The node itself still reaches its pods (their answers come back through the router).
      await ipIn(node.netns, 'route', 'add', `${pod.ip}/32`, 'dev', pod.hostVeth, 'scope', 'link');
    }
  }
}

/** eth0 with podIP/32 and a default route via the link-local gateway. */
async function linkLocalRoutedPod(node: PlannedNode, pod: PlannedPod): Promise<void> {
  await ipIn(pod.netns, 'addr', 'add', `${pod.ip}/32`, 'dev', 'eth0');
  await ipIn(pod.netns, 'link', 'set', 'eth0', 'up');
  await ipIn(pod.netns, 'route', 'add', 'default', 'via', node.podGateway, 'dev', 'eth0', 'onlink');
}

/** An address-less host veth that answers the pod's ARP by proxy, at once (as Calico sets it), and the pod's /32 route. */
async function proxyArpHostVeth(node: PlannedNode, pod: PlannedPod): Promise<void> {
  await sysctl(node.netns, `net.ipv4.conf.${pod.hostVeth}.proxy_arp=1`);
  await sysctl(node.netns, `net.ipv4.neigh.${pod.hostVeth}.proxy_delay=0`);
  await ipIn(node.netns, 'link', 'set', pod.hostVeth, 'up');
  await ipIn(node.netns, 'route', 'add', `${pod.ip}/32`, 'dev', pod.hostVeth, 'scope', 'link');
}

/**
 * Removes what a pod left in its node's namespace beyond its veth and routes (the
 * eni rules, bypass's uplink filter), so its address can be handed out again;
 * deleting the pod's namespace removes the rest.
 */
export async function unwirePod(plan: ClusterPlan, pod: PlannedPod): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  if (plan.cni === 'eni') {
    await ipIn(node.netns, 'rule', 'del', 'to', pod.ip, 'lookup', 'main', 'priority', String(ENI_TO_POD_PRIORITY));
    await ipIn(node.netns, 'rule', 'del', 'from', pod.ip, 'lookup', String(ENI_ROUTE_TABLE), 'priority', String(ENI_FROM_POD_PRIORITY));
  } else if (plan.cni === 'bypass') {
    await tcIn(node.netns, 'filter', 'del', 'dev', 'eth0', 'ingress', 'pref', bypassUplinkPref(pod));
  }
}
