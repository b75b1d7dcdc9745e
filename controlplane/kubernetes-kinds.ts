// The Kubernetes kinds the control plane watches, and where the API server serves
// them. Kinds defined by CRDs may be absent from a cluster; the source keeps
// running without them and checks again now and then.

export interface WatchedKind {
  kind: string;
  apiVersion: string;
  /** Collection path across all namespaces. */
  path: string;
  namespaced: boolean;
  /** Only for CRD kinds: what an operator reads when the CRD is not installed. */
  absentMessage?: string;
}

export const WATCHED_KINDS: readonly WatchedKind[] = [
  { kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces', namespaced: false },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', namespaced: true },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices', namespaced: true },
  {
    kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/httproutes', namespaced: true,
    absentMessage: 'HTTPRoute CRD not installed; routing disabled (install the Gateway API CRDs to route by HTTPRoute)',
  },
  {
    kind: 'GRPCRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/grpcroutes', namespaced: true,
    absentMessage: 'GRPCRoute CRD not installed; gRPC routing disabled (install the Gateway API standard CRDs to route by GRPCRoute)',
  },
  {
    kind: 'ReferenceGrant', apiVersion: 'gateway.networking.k8s.io/v1beta1', path: '/apis/gateway.networking.k8s.io/v1beta1/referencegrants', namespaced: true,
    absentMessage: 'ReferenceGrant CRD not installed; cross-namespace backendRefs are refused (RefNotPermitted) but for a consumer route\'s own parent Service',
  },
  {
    kind: 'AuthorizationPolicy', apiVersion: 'security.nodemesh.io/v1alpha1', path: '/apis/security.nodemesh.io/v1alpha1/authorizationpolicies', namespaced: true,
    absentMessage: 'AuthorizationPolicy CRD not installed; authorization policies disabled (apply manifests/ to install it)',
  },
];
