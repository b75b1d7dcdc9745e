// The benchmark cluster: two nodes; on node n1 one client pod per path (and the
// fairness row's noisy pod, and the workers row's same-node origin), on node n2
// a plain server pod (direct and the nginx chains) and an enrolled one (the mesh paths),
// each running nginx with a 1 KiB body and an iperf3 server; plus idle enrolled pods
// so the node daemons carry a realistic number of local workloads.

import type { ClusterSpec } from '../cluster/plan.ts';

export const HTTP_PORT = 80;
export const IPERF_PORT = 5201;
export const MESH = { 'nodemesh.io/mesh': 'enabled' };
/** Enrolled pods besides the benchmark's own, spread over both nodes (the RSS target names 100). */
export const IDLE_ENROLLED_PODS = 100;
/** The fairness row's noisy pod may hold this many connections (its `nodemesh.io/max-connections`). */
export const NOISY_MAX_CONNECTIONS = 2000;

export type PathName = 'direct' | 'nginx-mtls' | 'nginx-l7-mtls' | 'nodemesh-l4' | 'nodemesh-l7';
export const PATHS: PathName[] = ['direct', 'nginx-mtls', 'nginx-l7-mtls', 'nodemesh-l4', 'nodemesh-l7'];

/** Paths that carry HTTP only (no iperf3: no bulk number). */
export const HTTP_ONLY_PATHS: readonly PathName[] = ['nginx-l7-mtls', 'nodemesh-l7'];

/**
 * The C reference each path is compared with: the nginx `http` chain for the
 * HTTP paths, the nginx `stream` chain for the rest.
 */
export function referenceOf(path: PathName): PathName {
  return HTTP_ONLY_PATHS.includes(path) ? 'nginx-l7-mtls' : 'nginx-mtls';
}

/** Which client pod and which Service each path uses. */
export const PATH_ROUTES: Record<PathName, { client: string; service: string }> = {
  direct: { client: 'client-direct', service: 'origin-plain' },
  'nginx-mtls': { client: 'client-nginx', service: 'origin-plain' },
  'nginx-l7-mtls': { client: 'client-nginx-l7', service: 'origin-plain' },
  'nodemesh-l4': { client: 'client-mesh', service: 'origin-tcp' },
  'nodemesh-l7': { client: 'client-mesh', service: 'origin-http' },
};

/** The mesh paths' Services with the origin on the client's node (`server-local`, n1), for the workers row. */
export const SAME_NODE_SERVICES = { 'nodemesh-l4': 'origin-local-tcp', 'nodemesh-l7': 'origin-local-http' } as const;

export function benchClusterSpec(): ClusterSpec {
  const idle = Array.from({ length: IDLE_ENROLLED_PODS }, (_, i) => ({
    name: `idle-${i}`,
    node: i % 2 === 0 ? 'n1' : 'n2',
    labels: { app: 'idle', shard: String(i % 10) },
    // Ten identities, so the node holds more than one certificate.
    serviceAccount: `idle-${i % 10}`,
    annotations: MESH,
  }));
  return {
    nodes: 2,
    pods: [
      { name: 'client-direct', node: 'n1' },
      { name: 'client-nginx', node: 'n1' },
      { name: 'client-nginx-l7', node: 'n1' },
      { name: 'client-mesh', node: 'n1', serviceAccount: 'client', annotations: MESH },
      // The fairness row's flood, beside client-mesh on n1.
      { name: 'client-noisy', node: 'n1', serviceAccount: 'noisy', annotations: { ...MESH, 'nodemesh.io/max-connections': String(NOISY_MAX_CONNECTIONS) } },
      { name: 'server-plain', node: 'n2', labels: { app: 'origin-plain' } },
      { name: 'server-mesh', node: 'n2', labels: { app: 'origin-mesh' }, serviceAccount: 'origin', annotations: MESH },
      // The workers row's same-node runs: an enrolled origin on n1, beside client-mesh.
      { name: 'server-local', node: 'n1', labels: { app: 'origin-local' }, serviceAccount: 'origin', annotations: MESH },
      ...idle,
    ],
    services: [
      { name: 'origin-plain', selector: { app: 'origin-plain' }, ports: [{ name: 'http', port: HTTP_PORT }, { name: 'iperf', port: IPERF_PORT }] },
      // Declared TCP (appProtocol tcp), so the mesh carries it as opaque TCP even though nginx speaks HTTP.
      { name: 'origin-tcp', selector: { app: 'origin-mesh' }, ports: [{ name: 'web', port: HTTP_PORT, appProtocol: 'tcp' }, { name: 'iperf', port: IPERF_PORT, appProtocol: 'tcp' }] },
      { name: 'origin-http', selector: { app: 'origin-mesh' }, ports: [{ name: 'http', port: HTTP_PORT, appProtocol: 'http' }] },
      { name: SAME_NODE_SERVICES['nodemesh-l4'], selector: { app: 'origin-local' }, ports: [{ name: 'web', port: HTTP_PORT, appProtocol: 'tcp' }] },
      { name: SAME_NODE_SERVICES['nodemesh-l7'], selector: { app: 'origin-local' }, ports: [{ name: 'http', port: HTTP_PORT, appProtocol: 'http' }] },
    ],
  };
}
