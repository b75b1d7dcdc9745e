// The node's view of the mesh: every resource of the last applied update, indexed
// for the lookups the data plane does per connection (workload by IP, service by
// VIP, policies by workload). Applying an update is all-or-nothing per resource;
// listeners run after the indexes are consistent again.

import type {
  AuthorizationPolicy, ConfigUpdate, HttpRoute, MeshSettings, Resource, Service, Workload,
} from '../core/types.ts';
import { DEFAULT_SETTINGS } from '../core/types.ts';
import { identityOf } from '../core/identity.ts';
import { logger } from '../core/log.ts';

const log = logger('config');

export interface ConfigSnapshot {
  epoch: string;
  version: number;
  resources: Resource[];
}

export type ChangeListener = (update: ConfigUpdate) => void;

export class ConfigStore {
  readonly nodeName: string;
  epoch = '';
  version = 0;
  /** True once a snapshot (from the control plane or from disk) has been applied. */
  synced = false;

  readonly #resources = new Map<string, Resource>();
  readonly #workloadsByUid = new Map<string, Workload>();
  readonly #workloadsByIp = new Map<string, Workload>();
  readonly #servicesByKey = new Map<string, Service>();
  readonly #servicesByVip = new Map<string, Service>();
  readonly #servicesByEndpointIp = new Map<string, Service[]>();
  readonly #policiesByNamespace = new Map<string, AuthorizationPolicy[]>();
  readonly #routes = new Map<string, HttpRoute>();
  #settings: MeshSettings = DEFAULT_SETTINGS;
  /** Each workload object's identity under #settings. */
  #identities = new WeakMap<Workload, string>();
  readonly #listeners: ChangeListener[] = [];

  constructor(nodeName: string) {
    this.nodeName = nodeName;
  }

  onChange(listener: ChangeListener): void {
    this.#listeners.push(listener);
  }

  apply(update: ConfigUpdate): void {
    if (update.snapshot) {
      this.#resources.clear();
      this.#clearIndexes();
    }
    // Indexes change per resource, so a one-pod delta costs O(1), not a reindex of 10,000 pods.
    for (const key of update.removals) {
      const id = `${key.kind}:${key.key}`;
      const old = this.#resources.get(id);
      if (old) this.#unindex(old);
      this.#resources.delete(id);
    }
    for (const r of update.upserts) {
      const id = `${r.kind}:${r.key}`;
      const old = this.#resources.get(id);
      if (old) this.#unindex(old);
      this.#resources.set(id, r);
      this.#index(r);
    }
    this.epoch = update.epoch;
    this.version = update.version;
    if (update.snapshot) this.synced = true;
    for (const l of this.#listeners) {
      try {
        l(update);
      } catch (err) {
        log.error('config listener failed', { error: String((err as Error)?.stack ?? err) });
      }
    }
  }

  #clearIndexes(): void {
    this.#workloadsByUid.clear();
    this.#workloadsByIp.clear();
    this.#servicesByKey.clear();
    this.#servicesByVip.clear();
    this.#servicesByEndpointIp.clear();
    this.#policiesByNamespace.clear();
    this.#routes.clear();
    this.#useSettings(DEFAULT_SETTINGS);
  }

  #index(r: Resource): void {
    switch (r.kind) {
      case 'workload':
        this.#workloadsByUid.set(r.workload.uid, r.workload);
        if (r.workload.ip) this.#workloadsByIp.set(r.workload.ip, r.workload);
        break;
      case 'service':
        this.#servicesByKey.set(r.key, r.service);
        for (const vip of r.service.vips) this.#servicesByVip.set(vip, r.service);
        for (const e of r.service.endpoints) addTo(this.#servicesByEndpointIp, e.ip, r.service);
        break;
      case 'policy':
        addTo(this.#policiesByNamespace, r.policy.namespace, r.policy);
        break;
      case 'route':
        this.#routes.set(r.key, r.route);
        break;
      case 'settings':
        this.#useSettings(r.settings);
        break;
    }
  }

  #unindex(r: Resource): void {
    switch (r.kind) {
      case 'workload':
        this.#workloadsByUid.delete(r.workload.uid);
        // Another workload may have taken the IP over since (a recycled pod IP).
        if (this.#workloadsByIp.get(r.workload.ip) === r.workload) this.#workloadsByIp.delete(r.workload.ip);
        break;
      case 'service':
        this.#servicesByKey.delete(r.key);
        for (const vip of r.service.vips) if (this.#servicesByVip.get(vip) === r.service) this.#servicesByVip.delete(vip);
        for (const e of r.service.endpoints) removeFrom(this.#servicesByEndpointIp, e.ip, r.service);
        break;
      case 'policy':
        removeFrom(this.#policiesByNamespace, r.policy.namespace, r.policy);
        break;
      case 'route':
        this.#routes.delete(r.key);
        break;
      case 'settings':
        this.#useSettings(DEFAULT_SETTINGS);
        break;
    }
  }

  settings(): MeshSettings {
    return this.#settings;
  }

  /** A new trust domain names every workload anew. */
  #useSettings(settings: MeshSettings): void {
    this.#settings = settings;
    this.#identities = new WeakMap();
  }

  /** The workload's SPIFFE identity in this mesh's trust domain. */
  identityOf(workload: Workload): string {
    // Asked per HTTP request (metrics, the tunnel's peer identity): built once per workload object.
    let identity = this.#identities.get(workload);
    if (identity === undefined) this.#identities.set(workload, (identity = identityOf(this.#settings.trustDomain, workload.namespace, workload.serviceAccount)));
    return identity;
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.#workloadsByIp.get(ip);
  }

  workloadByUid(uid: string): Workload | undefined {
    return this.#workloadsByUid.get(uid);
  }

  /** The workload behind a Service endpoint: by uid when the endpoint names one, else by IP. */
  endpointWorkload(endpoint: { workloadUid: string; ip: string }): Workload | undefined {
    return (endpoint.workloadUid ? this.#workloadsByUid.get(endpoint.workloadUid) : undefined) ?? this.#workloadsByIp.get(endpoint.ip);
  }

  workloads(): Workload[] {
    return [...this.#workloadsByUid.values()];
  }

  /** Enrolled workloads scheduled on this node. */
  localWorkloads(): Workload[] {
    return this.workloads().filter((w) => w.node === this.nodeName && w.enrolled);
  }

  isLocalEnrolled(ip: string): Workload | undefined {
    const w = this.#workloadsByIp.get(ip);
    return w && w.enrolled && w.node === this.nodeName ? w : undefined;
  }

  serviceByVip(ip: string): Service | undefined {
    return this.#servicesByVip.get(ip);
  }

  /** Services that list `ip` among their endpoints. */
  servicesWithEndpoint(ip: string): readonly Service[] {
    return this.#servicesByEndpointIp.get(ip) ?? [];
  }

  serviceByKey(namespace: string, name: string): Service | undefined {
    return this.#servicesByKey.get(`${namespace}/${name}`);
  }

  services(): Service[] {
    return [...this.#servicesByKey.values()];
  }

  routes(): HttpRoute[] {
    return [...this.#routes.values()];
  }

  policies(): AuthorizationPolicy[] {
    return [...this.#policiesByNamespace.values()].flat();
  }

  /** Policies that apply to a workload: its namespace's and the root namespace's, selector matched. */
  policiesFor(workload: Workload): AuthorizationPolicy[] {
    const root = this.#settings.rootNamespace;
    const candidates = [...(this.#policiesByNamespace.get(workload.namespace) ?? [])];
    if (root !== workload.namespace) candidates.push(...(this.#policiesByNamespace.get(root) ?? []));
    return candidates.filter((p) => p.selector === null || Object.entries(p.selector).every(([k, v]) => workload.labels[k] === v));
  }

  snapshot(): ConfigSnapshot {
    return { epoch: this.epoch, version: this.version, resources: [...this.#resources.values()] };
  }

  /** Applies a snapshot (another store's, e.g. the main thread's for a data-plane worker) as if it had just arrived. */
  load(snap: ConfigSnapshot): void {
    this.apply({ epoch: snap.epoch, version: snap.version, snapshot: true, upserts: snap.resources, removals: [] });
  }

  /** Loads a persisted snapshot (see readLastKnownGood) as if it had just arrived. */
  restore(snap: ConfigSnapshot): void {
    this.load(snap);
    log.info('restored last-known-good config', { version: snap.version, resources: snap.resources.length });
  }
}

function addTo<K, V>(index: Map<K, V[]>, key: K, value: V): void {
  const list = index.get(key);
  if (list) list.push(value);
  else index.set(key, [value]);
}

function removeFrom<K, V>(index: Map<K, V[]>, key: K, value: V): void {
  const list = index.get(key);
  if (!list) return;
  const i = list.indexOf(value);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) index.delete(key);
}
