// `--source kubernetes`: the mesh's config read from the API server. One reflector
// per kind (Namespaces, Pods, Services, EndpointSlices, HTTPRoutes,
// AuthorizationPolicies) delivers raw objects to the mesh model, which validates
// them exactly as it does for the file source.

import type { KubeConfig } from '@kubernetes/client-node';
import type { ConfigSource, SourceEvents } from './source.ts';
import type { ReflectorTiming } from './kubernetes-reflector.ts';
import { KubeApi } from './kubernetes-api.ts';
import { DEFAULT_TIMING, Reflector } from './kubernetes-reflector.ts';
import { WATCHED_KINDS } from './kubernetes-kinds.ts';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';

const log = logger('kubernetes');

export interface KubernetesSourceOptions {
  timing?: Partial<ReflectorTiming>;
}

export class KubernetesSource implements ConfigSource {
  readonly #api: KubeApi;
  readonly #timing: ReflectorTiming;
  #reflectors: Reflector[] = [];

  /** `config`: `KubeConfig.loadFromCluster()` in a pod, `loadFromDefault()` outside. */
  constructor(config: KubeConfig, options: KubernetesSourceOptions = {}) {
    this.#api = new KubeApi(config);
    this.#timing = { ...DEFAULT_TIMING, ...options.timing };
  }

  /** Starts watching and returns; `events.synced()` follows once every kind has been listed. */
  async start(events: SourceEvents): Promise<void> {
    if (this.#reflectors.length) throw new NodemeshError(ErrorCode.SOURCE_STARTED, 'kubernetes source: start() called twice');
    const server = this.#api.config.getCurrentCluster()?.server;
    let pending = WATCHED_KINDS.length;
    const onListed = () => {
      pending--;
      if (pending === 0) {
        log.info('initial list complete', { kinds: WATCHED_KINDS.map((k) => k.kind) });
        events.synced();
      }
    };
    this.#reflectors = WATCHED_KINDS.map((kind) => new Reflector(this.#api, kind, events, this.#timing, onListed));
    log.info('watching the Kubernetes API', { server });
    for (const r of this.#reflectors) r.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }
}
