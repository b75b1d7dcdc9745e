// Domain types of the mesh model, shared by the control plane, the agent and the
// data plane. They mirror the control API (proto/nodemesh/v1/mesh.proto) in
// camelCase; `wire.ts` converts between the two at the edge.

export type MtlsMode = 'strict' | 'permissive';

export interface Workload {
  uid: string;
  namespace: string;
  name: string;
  /** Deployment/StatefulSet/... name from owner references or labels. */
  workloadName: string;
  serviceAccount: string;
  node: string;
  ip: string;
  labels: Record<string, string>;
  enrolled: boolean;
  mtlsMode: MtlsMode;
  namedPorts: Record<string, number>;
  /** Open outbound connections this pod may hold through its node's proxy (`nodemesh.io/max-connections`); absent: the node's default. */
  maxConnections?: number;
  /** Concurrent outbound HTTP requests of this pod (`nodemesh.io/max-concurrent-requests`); absent: the node's default. */
  maxConcurrentRequests?: number;
}

export interface ServicePort {
  name: string;
  port: number;
  /** 0 when `targetPortName` names a container port instead. */
  targetPort: number;
  targetPortName: string;
  appProtocol: string;
}

export interface Endpoint {
  workloadUid: string;
  ip: string;
  ready: boolean;
}

export interface Service {
  namespace: string;
  name: string;
  vips: string[];
  ports: ServicePort[];
  endpoints: Endpoint[];
  opaquePorts: number[];
}

export interface StringMatch {
  type: 'Exact' | 'PathPrefix' | 'RegularExpression';
  value: string;
}

export interface NameMatch {
  type: 'Exact' | 'RegularExpression';
  name: string;
  value: string;
}

export interface HttpRouteMatch {
  path?: StringMatch;
  headers: NameMatch[];
  queryParams: NameMatch[];
  method: string;
}

export interface HeaderValue {
  name: string;
  value: string;
}

export interface HeaderModifier {
  set: HeaderValue[];
  add: HeaderValue[];
  remove: string[];
}

export interface PathModifier {
  type: 'ReplaceFullPath' | 'ReplacePrefixMatch';
  value: string;
}

export interface HttpRouteFilter {
  type: 'RequestHeaderModifier' | 'ResponseHeaderModifier' | 'RequestRedirect' | 'URLRewrite' | 'RequestMirror';
  headerModifier?: HeaderModifier;
  scheme: string;
  hostname: string;
  path?: PathModifier;
  port: number;
  statusCode: number;
  /** RequestMirror: where the copy goes (its response is discarded). */
  mirror?: BackendRef;
}

export interface BackendRef {
  namespace: string;
  name: string;
  port: number;
  weight: number;
  /** Non-empty when unusable: requests routed here get 500. */
  invalidReason: string;
  /** Filters applied only to requests sent to this backend (after the rule's). */
  filters?: HttpRouteFilter[];
}

/** An HTTPRoute rule's `retry`: replaces the node's retried statuses and attempts; the retry budget still bounds it. */
export interface HttpRouteRetry {
  /** Statuses retried; empty: the node's (--http-retry-statuses). */
  codes: number[];
  /** Retries after the first attempt. */
  attempts: number;
  /** Wait before each retry; 0: none. */
  backoffMs: number;
}

export interface HttpRouteRule {
  matches: HttpRouteMatch[];
  filters: HttpRouteFilter[];
  backendRefs: BackendRef[];
  requestTimeoutMs: number;
  backendRequestTimeoutMs: number;
  /** Absent (or null from the wire): the node's retry settings. */
  retry?: HttpRouteRetry | null;
}

export interface ParentRef {
  namespace: string;
  name: string;
  /** 0: every port of the Service. */
  port: number;
}

/** Which Gateway API kind a compiled route came from; '' (from the wire) is HTTPRoute. */
export type RouteKind = 'HTTPRoute' | 'GRPCRoute' | '';

export interface HttpRoute {
  /** Absent or '' for HTTPRoute. GRPCRoute matches become path matches on "/service/method". */
  kind?: RouteKind;
  namespace: string;
  name: string;
  parents: ParentRef[];
  hostnames: string[];
  rules: HttpRouteRule[];
  creationTimestamp: string;
}

export interface PolicySource {
  principals: string[];
  notPrincipals: string[];
  namespaces: string[];
  notNamespaces: string[];
  ipBlocks: string[];
  notIpBlocks: string[];
}

export interface PolicyOperation {
  ports: number[];
  notPorts: number[];
  methods: string[];
  notMethods: string[];
  paths: string[];
  notPaths: string[];
}

export interface PolicyRule {
  from: PolicySource[];
  to: PolicyOperation[];
}

export type PolicyAction = 'ALLOW' | 'DENY';

export interface AuthorizationPolicy {
  namespace: string;
  name: string;
  /** null: every workload of the namespace (of the mesh, in the root namespace). */
  selector: Record<string, string> | null;
  action: PolicyAction;
  rules: PolicyRule[];
}

export interface MeshSettings {
  trustDomain: string;
  rootNamespace: string;
}

export const DEFAULT_SETTINGS: MeshSettings = {
  trustDomain: 'cluster.local',
  rootNamespace: 'nodemesh-system',
};

export type ResourceKind = 'workload' | 'service' | 'route' | 'policy' | 'settings';

export type Resource =
  | { kind: 'workload'; key: string; version: number; workload: Workload }
  | { kind: 'service'; key: string; version: number; service: Service }
  | { kind: 'route'; key: string; version: number; route: HttpRoute }
  | { kind: 'policy'; key: string; version: number; policy: AuthorizationPolicy }
  | { kind: 'settings'; key: string; version: number; settings: MeshSettings };

export interface ResourceKey {
  kind: ResourceKind;
  key: string;
}

/** One message of the Watch stream, in domain terms. */
export interface ConfigUpdate {
  epoch: string;
  version: number;
  snapshot: boolean;
  upserts: Resource[];
  removals: ResourceKey[];
}

/** The key a resource is stored under: uid for workloads, namespace/name otherwise. */
export function namespacedKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
