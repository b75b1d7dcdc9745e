// Writes route status to the API server through the status subresource: one
// JSON merge patch of `status.parents` per change, our entries (controllerName
// nodemesh.io/mesh) replacing our earlier ones and every other controller's
// entries (a Gateway's, say) kept as read. The patch carries the resourceVersion
// it was built from, so a concurrent writer makes it a 409 and it is built again.
// Writes run one at a time and only the latest status of a route is written; a
// route deleted meanwhile (404) is simply done.

import { logger } from '../core/log.ts';
import { isStatus, type KubeApi } from './kubernetes-api.ts';
import { CONTROLLER_NAME, type RouteParentStatus, type RouteStatus } from './route-status.ts';

const log = logger('route-status');
const ATTEMPTS = 3;
const PLURALS = { HTTPRoute: 'httproutes', GRPCRoute: 'grpcroutes' } as const;

interface StoredRoute {
  metadata: { resourceVersion?: string };
  status?: { parents?: RouteParentStatus[] };
}

export class KubernetesRouteStatusWriter {
  readonly #api: KubeApi;
  readonly #pending = new Map<string, RouteStatus>();
  #running: Promise<void> | undefined;

  constructor(api: KubeApi) {
    this.#api = api;
  }

  /** Queues `status` for writing; a later status of the same route replaces it unwritten. */
  write(status: RouteStatus): void {
    this.#pending.set(`${status.kind}/${status.namespace}/${status.name}`, status);
    this.#running ??= this.#drain().finally(() => (this.#running = undefined));
  }

  /** Resolves once everything queued so far is written (or given up). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #drain(): Promise<void> {
    while (this.#pending.size) {
      const [key, status] = this.#pending.entries().next().value!;
      this.#pending.delete(key);
      await this.#writeOne(status);
    }
  }

  async #writeOne(status: RouteStatus): Promise<void> {
    const path = `/apis/gateway.networking.k8s.io/v1/namespaces/${encodeURIComponent(status.namespace)}/${PLURALS[status.kind]}/${encodeURIComponent(status.name)}`;
    const route = `${status.kind} ${status.namespace}/${status.name}`;
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        const current = await this.#api.get<StoredRoute>(path);
        const others = (current.status?.parents ?? []).filter((p) => p.controllerName !== CONTROLLER_NAME);
        await this.#api.mergePatch(`${path}/status`, {
          metadata: { resourceVersion: current.metadata.resourceVersion },
          status: { parents: [...others, ...status.parents] },
        });
        log.debug('route status written', { route, generation: status.generation });
        return;
      } catch (err) {
        if (isStatus(err, 404)) return;
        if (isStatus(err, 409) && attempt < ATTEMPTS) continue;
        const hint = isStatus(err, 403) ? ': the control plane needs patch on httproutes/status and grpcroutes/status (manifests/controlplane-rbac.yaml)' : '';
        log.warn(`cannot write route status${hint}`, { route, error: (err as Error).message });
        return;
      }
    }
  }
}
