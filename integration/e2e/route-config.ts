// HTTPRoutes and GRPCRoutes for end-to-end tests: GAMMA routes (a Service parent) as the control
// plane reads them, and waiting until a node's /config_dump holds a route as
// compiled, so a test sends traffic only once the node routes by it.

import type { KubeObject } from '../../controlplane/source.ts';
import type { HttpRoute, Resource } from '../../core/types.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { adminGet } from './mesh-fixture.ts';
import { waitUntil } from './wait-until.ts';

/** An HTTPRoute attached to Service `parent` port `port` in `namespace`; `rules` as the Gateway API spells them. */
export function gammaRoute(namespace: string, name: string, parent: string, port: number, rules: unknown[]): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
    metadata: { name, namespace, creationTimestamp: '2025-01-01T00:00:00Z' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: parent, port }], rules },
  };
}

/** A GRPCRoute attached to Service `parent` port `port` in `namespace`. */
export function grpcRoute(namespace: string, name: string, parent: string, port: number, rules: unknown[]): KubeObject {
  return { ...gammaRoute(namespace, name, parent, port, rules), kind: 'GRPCRoute' };
}

/** The compiled route `namespace/name` a node holds, if any. */
export async function routeOnNode(cluster: Cluster, node: string, namespace: string, name: string): Promise<HttpRoute | undefined> {
  const dump = await adminGet<{ resources: Resource[] }>(cluster, node, '/config_dump');
  for (const r of dump.resources) if (r.kind === 'route' && r.route.namespace === namespace && r.route.name === name) return r.route;
  return undefined;
}

/** Waits until the node holds route `namespace/name` and `check` accepts it. */
export async function waitForRoute(cluster: Cluster, node: string, namespace: string, name: string, what: string, check: (route: HttpRoute) => boolean = () => true): Promise<void> {
  await waitUntil(`node ${node} to hold HTTPRoute ${namespace}/${name} ${what}`, async () => {
    const route = await routeOnNode(cluster, node, namespace, name);
    return route !== undefined && check(route);
  });
}
