// What a test cluster looks like, decided before anything is created: its CNI
// profile, node and pod namespaces, addresses, Service VIPs and endpoints. Pure, so
// the same plan drives the network build, the kube-proxy rules and the control
// plane's YAML.

import { createHash } from 'node:crypto';
import { InvalidObjectError } from '../../core/errors.ts';

export interface ContainerPortSpec {
  name: string;
  port: number;
}

export interface PodSpec {
  name: string;
  /** Default "default". */
  namespace?: string;
  /** Node name: "n1", "n2", ... or as ClusterSpec.nodeNames says. */
  node: string;
  /** Merged over { app: name }. */
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Default "default". */
  serviceAccount?: string;
  /** Named container ports, for Services whose targetPort is a name. */
  ports?: ContainerPortSpec[];
  /** Default: the next free address of the node's pod CIDR. */
  ip?: string;
}

export interface ServicePortSpec {
  name?: string;
  port: number;
  /** Number or container port name; default `port`. */
  targetPort?: number | string;
  appProtocol?: string;
}

export interface ServiceSpec {
  name: string;
  namespace?: string;
  selector: Record<string, string>;
  ports: ServicePortSpec[];
  /** Default: the next free address of 10.96.0.0/16 from 10.96.0.10. */
  clusterIP?: string;
  annotations?: Record<string, string>;
}

export interface NamespaceSpec {
  name: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/**
 * How pods are wired to their node, after the CNIs clusters run (network.ts builds
 * each): `bridge` (flannel, kindnet) a bridge holding the pod CIDR's gateway address;
 * `routed` (Calico) address-less veths with proxy ARP and a /32 route per pod; `eni`
 * (AWS VPC CNI) the same plus per-pod policy-routing rules; `bypass` (an eBPF
 * datapath) tc redirects between pod veth and uplink, so the node's netfilter never
 * sees pod traffic.
 */
export type CniProfile = 'bridge' | 'routed' | 'eni' | 'bypass';
export const CNI_PROFILES: readonly CniProfile[] = ['bridge', 'routed', 'eni', 'bypass'];
/** Today's capture (nat REDIRECT in the node's namespace) needs an address on the pod's host side: only `bridge` has one. */
export const DEFAULT_CNI: CniProfile = 'bridge';

export interface ClusterSpec {
  /** Default `bridge` (DEFAULT_CNI). */
  cni?: CniProfile;
  /** Number of nodes, named n1..nN unless `nodeNames` says otherwise. */
  nodes: number;
  /** Kubernetes node names, in order (node i routes 10.244.i.0/24). */
  nodeNames?: string[];
  pods?: PodSpec[];
  services?: ServiceSpec[];
  /** Namespaces that need labels or annotations; namespaces only used by pods are created plain. */
  namespaces?: NamespaceSpec[];
}

export interface PlannedNode {
  name: string;
  netns: string;
  /** Underlay address. */
  ip: string;
  podCidr: string;
  /** The pods' default gateway: the pod CIDR's first address on `bridge`, else the link-local 169.254.1.1. */
  podGateway: string;
}

export interface PlannedPod {
  uid: string;
  name: string;
  namespace: string;
  node: string;
  netns: string;
  ip: string;
  /** The node side of the pod's veth, in the node's namespace; its name says the profile (veth, cali, eni, lxc). */
  hostVeth: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  serviceAccount: string;
  ports: ContainerPortSpec[];
}

export interface PlannedServicePort {
  name: string;
  port: number;
  targetPort: number | string;
  appProtocol: string;
}

export interface PlannedService {
  name: string;
  namespace: string;
  clusterIP: string;
  selector: Record<string, string>;
  ports: PlannedServicePort[];
  annotations: Record<string, string>;
}

export interface ClusterPlan {
  prefix: string;
  cni: CniProfile;
  /** The underlay's bridge, and the router on it: every node's default route. */
  underlay: { netns: string; bridge: string; router: string };
  controlPlane: { netns: string; ip: string };
  nodes: PlannedNode[];
  pods: PlannedPod[];
  services: PlannedService[];
  namespaces: NamespaceSpec[];
}

export const UNDERLAY_CIDR_BITS = 24;
/** The gateway of pods on address-less veths (Calico's, the AWS VPC CNI's, Cilium's). */
export const LINK_LOCAL_GATEWAY = '169.254.1.1';
export const UNDERLAY_ROUTER = '172.30.0.1';
/** The `eni` profile's per-node table for traffic from its pods, as the AWS VPC CNI's per-ENI table. */
export const ENI_ROUTE_TABLE = 2;
const HOST_VETH_PREFIX: Record<CniProfile, string> = { bridge: 'veth', routed: 'cali', eni: 'eni', bypass: 'lxc' };
const MAX_NODES = 200;

export function nodeIp(index: number): string {
  return `172.30.0.${10 + index}`;
}

export function podCidr(index: number): string {
  return `10.244.${index}.0/24`;
}

/** The bridge profile's gateway of node `index`: the pod CIDR's first address, never handed to a pod. */
export function podCidrGateway(index: number): string {
  return `10.244.${index}.1`;
}

/** A stable UUID-shaped uid, so the same spec always yields the same pods. */
export function stableUid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('/')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function checkName(object: string, field: string, value: string): void {
  if (!DNS_LABEL.test(value) || value.length > 63) throw new InvalidObjectError(object, field, `${JSON.stringify(value)} is not a DNS label (lower-case letters, digits, "-")`);
}

export function planCluster(spec: ClusterSpec, prefix: string): ClusterPlan {
  if (!/^[a-z][a-z0-9]*$/.test(prefix) || prefix.length > 24) throw new InvalidObjectError('cluster', 'prefix', `${JSON.stringify(prefix)} must be lower-case letters and digits, starting with a letter, at most 24 long`);
  if (!Number.isInteger(spec.nodes) || spec.nodes < 1 || spec.nodes > MAX_NODES) throw new InvalidObjectError('cluster', 'nodes', `must be an integer from 1 to ${MAX_NODES}, got ${spec.nodes}`);
  const cni = spec.cni ?? DEFAULT_CNI;
  if (!CNI_PROFILES.includes(cni)) throw new InvalidObjectError('cluster', 'cni', `${JSON.stringify(cni)} is not a CNI profile; profiles are ${CNI_PROFILES.join(', ')}`);
  const nodes: PlannedNode[] = [];
  if (spec.nodeNames && spec.nodeNames.length !== spec.nodes) throw new InvalidObjectError('cluster', 'nodeNames', `names ${spec.nodeNames.length} nodes, but nodes is ${spec.nodes}`);
  spec.nodeNames?.forEach((name, i) => checkName('cluster', `nodeNames[${i}]`, name));
  for (let i = 1; i <= spec.nodes; i++) {
    nodes.push({ name: spec.nodeNames?.[i - 1] ?? `n${i}`, netns: `${prefix}-n${i}`, ip: nodeIp(i), podCidr: podCidr(i), podGateway: cni === 'bridge' ? podCidrGateway(i) : LINK_LOCAL_GATEWAY });
  }
  const plan: ClusterPlan = {
    prefix,
    cni,
    underlay: { netns: `${prefix}-ul`, bridge: 'br0', router: UNDERLAY_ROUTER },
    controlPlane: { netns: `${prefix}-cp`, ip: '172.30.0.2' },
    nodes,
    pods: [],
    services: [],
    namespaces: [],
  };
  for (const ns of spec.namespaces ?? []) addNamespace(plan, ns);
  for (const pod of spec.pods ?? []) planPod(plan, pod);
  for (const svc of spec.services ?? []) planService(plan, svc);
  return plan;
}

function addNamespace(plan: ClusterPlan, ns: NamespaceSpec): void {
  checkName(`namespace ${ns.name}`, 'name', ns.name);
  const existing = plan.namespaces.find((n) => n.name === ns.name);
  if (existing && (ns.labels || ns.annotations)) throw new InvalidObjectError(`namespace ${ns.name}`, 'name', 'declared twice');
  if (!existing) plan.namespaces.push({ name: ns.name, labels: { ...ns.labels }, annotations: { ...ns.annotations } });
}

/** Adds a pod to the plan (mutating it) and returns it; addresses already taken are skipped. */
export function planPod(plan: ClusterPlan, spec: PodSpec): PlannedPod {
  const namespace = spec.namespace ?? 'default';
  const object = `pod ${namespace}/${spec.name}`;
  checkName(object, 'name', spec.name);
  addNamespace(plan, { name: namespace });
  if (plan.pods.some((p) => p.namespace === namespace && p.name === spec.name)) throw new InvalidObjectError(object, 'name', 'declared twice');
  const nodeIndex = plan.nodes.findIndex((n) => n.name === spec.node);
  if (nodeIndex < 0) throw new InvalidObjectError(object, 'node', `no node ${JSON.stringify(spec.node)}; nodes are ${plan.nodes.map((n) => n.name).join(', ')}`);
  const taken = new Set(plan.pods.map((p) => p.ip));
  let ip = spec.ip;
  if (ip === undefined) {
    for (let host = 10; host < 255 && ip === undefined; host++) {
      const candidate = `10.244.${nodeIndex + 1}.${host}`;
      if (!taken.has(candidate)) ip = candidate;
    }
    if (ip === undefined) throw new InvalidObjectError(object, 'node', `pod CIDR of node ${spec.node} is full`);
  } else if (taken.has(ip)) {
    throw new InvalidObjectError(object, 'ip', `${ip} is already used by another pod`);
  } else if (!ip.startsWith(`10.244.${nodeIndex + 1}.`)) {
    throw new InvalidObjectError(object, 'ip', `${ip} is outside node ${spec.node}'s pod CIDR ${plan.nodes[nodeIndex]!.podCidr}`);
  } else if (ip === podCidrGateway(nodeIndex + 1)) {
    throw new InvalidObjectError(object, 'ip', `${ip} is the gateway address of node ${spec.node}'s pod CIDR ${plan.nodes[nodeIndex]!.podCidr}`);
  }
  const vethNumbers = new Set(plan.pods.map((p) => p.hostVeth));
  const vethPrefix = HOST_VETH_PREFIX[plan.cni];
  let n = plan.pods.length;
  while (vethNumbers.has(`${vethPrefix}${n}`)) n++;
  const pod: PlannedPod = {
    uid: stableUid(plan.prefix, namespace, spec.name),
    name: spec.name,
    namespace,
    node: spec.node,
    // Named after its node, as a node's runtime keeps only its own pods' namespaces: the node's agent searches `<node netns>-pod-*`.
    netns: `${plan.nodes[nodeIndex]!.netns}-pod-${namespace}-${spec.name}`,
    ip,
    hostVeth: `${vethPrefix}${n}`,
    labels: { app: spec.name, ...spec.labels },
    annotations: { ...spec.annotations },
    serviceAccount: spec.serviceAccount ?? 'default',
    ports: [...(spec.ports ?? [])],
  };
  plan.pods.push(pod);
  return pod;
}

export function planService(plan: ClusterPlan, spec: ServiceSpec): PlannedService {
  const namespace = spec.namespace ?? 'default';
  const object = `service ${namespace}/${spec.name}`;
  checkName(object, 'name', spec.name);
  addNamespace(plan, { name: namespace });
  if (plan.services.some((s) => s.namespace === namespace && s.name === spec.name)) throw new InvalidObjectError(object, 'name', 'declared twice');
  if (spec.ports.length === 0) throw new InvalidObjectError(object, 'ports', 'needs at least one port');
  const taken = new Set(plan.services.map((s) => s.clusterIP));
  let clusterIP = spec.clusterIP;
  if (clusterIP === undefined) {
    for (let i = 10; clusterIP === undefined; i++) {
      const candidate = `10.96.${Math.floor(i / 256)}.${i % 256}`;
      if (!taken.has(candidate)) clusterIP = candidate;
    }
  } else if (taken.has(clusterIP)) {
    throw new InvalidObjectError(object, 'clusterIP', `${clusterIP} is already used by another Service`);
  }
  const svc: PlannedService = {
    name: spec.name,
    namespace,
    clusterIP,
    selector: { ...spec.selector },
    ports: spec.ports.map((p, i) => ({ name: p.name ?? (spec.ports.length === 1 ? '' : `port-${i}`), port: p.port, targetPort: p.targetPort ?? p.port, appProtocol: p.appProtocol ?? '' })),
    annotations: { ...spec.annotations },
  };
  plan.services.push(svc);
  return svc;
}

/** The pods a Service selects, with the target port resolved per pod (named ports by container port name). */
export function serviceEndpoints(plan: ClusterPlan, svc: PlannedService, port: PlannedServicePort): { pod: PlannedPod; port: number }[] {
  const selected = plan.pods.filter((p) => p.namespace === svc.namespace && Object.entries(svc.selector).every(([k, v]) => p.labels[k] === v));
  const endpoints: { pod: PlannedPod; port: number }[] = [];
  for (const pod of selected) {
    const target = typeof port.targetPort === 'number' ? port.targetPort : pod.ports.find((cp) => cp.name === port.targetPort)?.port;
    if (target !== undefined) endpoints.push({ pod, port: target });
  }
  return endpoints;
}
