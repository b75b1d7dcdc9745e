// The mesh model: raw objects from a config source in, validated and resolved
// mesh resources out, as versioned deltas. Changes made in one tick (one file
// read, one burst of watch events) become one delta. Work is incremental: a pod
// change touches only that pod's workload and the Services that select it.

import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type {
  AuthorizationPolicy, ConfigUpdate, Endpoint, HttpRoute, MeshSettings, Resource, ResourceKey, ResourceKind, Workload,
} from '../core/types.ts';
import { DEFAULT_SETTINGS, namespacedKey } from '../core/types.ts';
import { InvalidObjectError } from '../core/errors.ts';
import { logger } from '../core/log.ts';
import type { KubeObject, Origin, SourceEvents } from './source.ts';
import { FieldReader, describeObject } from './fields.ts';
import { defaultNamespace, toNamespace, type MeshNamespace } from './namespace.ts';
import { toPod, type MeshPod } from './pod.ts';
import { toService, type MeshService } from './service.ts';
import { toEndpointSlice, type MeshEndpointSlice } from './endpoint-slice.ts';
import { toHttpRoute } from './httproute.ts';
import { toGrpcRoute } from './grpcroute.ts';
import { grantsRouteToService, toReferenceGrant, type MeshReferenceGrant } from './referencegrant.ts';
import { routeStatusOf, sameConditions, type RouteStatus } from './route-status.ts';
import { toAuthorizationPolicy } from './authorization-policy.ts';
import { LabelIndex, SelectorIndex } from './label-index.ts';
import { UpdateHistory } from './update-history.ts';

const log = logger('model');

export interface RejectedObject {
  origin: Origin;
  object: string;
  field: string;
  reason: string;
}

export interface MeshModelOptions {
  trustDomain?: string;
  rootNamespace?: string;
  /** How many recent deltas a reconnecting node can resume from. */
  historyLimit?: number;
}

export type UpdateListener = (delta: ConfigUpdate) => void;
/** A route's status changed (not called again while it stays the same). */
export type RouteStatusListener = (status: RouteStatus) => void;

/** The kinds the model reads, by "group/Kind" ("" for the core group). */
const KINDS = {
  namespace: '/Namespace',
  pod: '/Pod',
  service: '/Service',
  slice: 'discovery.k8s.io/EndpointSlice',
  route: 'gateway.networking.k8s.io/HTTPRoute',
  grpcRoute: 'gateway.networking.k8s.io/GRPCRoute',
  grant: 'gateway.networking.k8s.io/ReferenceGrant',
  policy: 'security.nodemesh.io/AuthorizationPolicy',
} as const;

const SETTINGS_KEY = 'mesh';

interface PodEntry {
  /** The last accepted object, re-converted when its Namespace changes. */
  raw: KubeObject;
  origin: Origin;
  /** null: valid, but not a workload (no IP yet, terminated, host network). */
  pod: MeshPod | null;
}

export class MeshModel implements SourceEvents {
  readonly epoch = randomBytes(8).toString('hex');
  readonly settings: MeshSettings;

  #version = 0;
  #synced = false;
  #syncPublished = false;
  readonly #syncWaiters: (() => void)[] = [];
  readonly #listeners = new Set<UpdateListener>();
  readonly #history: UpdateHistory;

  // Accepted state, by "namespace/name" (name only for Namespaces).
  readonly #namespaces = new Map<string, MeshNamespace>();
  readonly #pods = new Map<string, PodEntry>();
  readonly #podKeysByNamespace = new Map<string, Set<string>>();
  readonly #podLabels = new LabelIndex();
  readonly #podKeyByUid = new Map<string, string>();
  readonly #podKeyByIp = new Map<string, string>();
  readonly #uidsByNode = new Map<string, Set<string>>();
  readonly #services = new Map<string, MeshService>();
  readonly #serviceSelectors = new SelectorIndex();
  readonly #slices = new Map<string, MeshEndpointSlice>();
  readonly #sliceKeysByService = new Map<string, Set<string>>();
  readonly #routes = new Map<string, KubeObject>();
  /** Routes whose latest version was refused, by route key: their status says why. */
  readonly #refusedRoutes = new Map<string, { raw: KubeObject; field: string; reason: string }>();
  readonly #routeStatus = new Map<string, RouteStatus>();
  readonly #statusListeners = new Set<RouteStatusListener>();
  #statusDirty = false;
  /** ReferenceGrants by "namespace/name": they decide cross-namespace backendRefs, so a change compiles every route again. */
  readonly #grants = new Map<string, MeshReferenceGrant>();
  readonly #policies = new Map<string, AuthorizationPolicy>();
  readonly #rejected = new Map<string, RejectedObject>();
  /** Origins heard from since the last flush: a source reports one file's read in one tick. */
  readonly #originsThisTick = new Set<Origin>();

  // What nodes have been sent, and what must be recomputed at the next flush.
  readonly #published = new Map<string, Resource>();
  readonly #dirty = new Set<string>();
  #routesDirty = false;
  #flushScheduled = false;

  constructor(opts: MeshModelOptions = {}) {
    this.settings = {
      trustDomain: opts.trustDomain ?? DEFAULT_SETTINGS.trustDomain,
      rootNamespace: opts.rootNamespace ?? DEFAULT_SETTINGS.rootNamespace,
    };
    this.#history = new UpdateHistory(opts.historyLimit ?? 1000);
    this.#markDirty('settings', SETTINGS_KEY);
  }

  get version(): number {
    return this.#version;
  }

  /** The source's initial state has been delivered and published. */
  get isSynced(): boolean {
    return this.#syncPublished;
  }

  whenSynced(): Promise<void> {
    if (this.#syncPublished) return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.push(resolve));
  }

  /** Calls `listener` with every delta from now on; returns the unsubscribe function. */
  subscribe(listener: UpdateListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Every resource, as one snapshot at the current version. */
  snapshotFor(): ConfigUpdate {
    return { epoch: this.epoch, version: this.#version, snapshot: true, upserts: [...this.#published.values()], removals: [] };
  }

  /** The deltas a node at (epoch, version) missed, or null when it needs a snapshot. */
  deltasSince(epoch: string, version: number): ConfigUpdate[] | null {
    if (epoch !== this.epoch) return null;
    return this.#history.since(version, this.#version);
  }

  /** Calls `listener` with each route status that changes from now on; returns the unsubscribe function. */
  onRouteStatus(listener: RouteStatusListener): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /** The status of every route with a Service parent, as its owner would read it. */
  routeStatuses(): RouteStatus[] {
    return [...this.#routeStatus.values()];
  }

  /** Objects that were refused, for status and the operator. */
  rejected(): RejectedObject[] {
    return [...this.#rejected.values()];
  }

  resources(): Resource[] {
    return [...this.#published.values()];
  }

  workloadByUid(uid: string): Workload | undefined {
    const key = this.#podKeyByUid.get(uid);
    return key ? this.#pods.get(key)?.pod?.workload : undefined;
  }

  workloadByIp(ip: string): Workload | undefined {
    const key = this.#podKeyByIp.get(ip);
    return key ? this.#pods.get(key)?.pod?.workload : undefined;
  }

  /** Workloads scheduled on `node`, for node authorization. */
  workloadsOnNode(node: string): Workload[] {
    return [...this.#uidsByNode.get(node) ?? []].map((uid) => this.workloadByUid(uid)!).filter(Boolean);
  }

  // --- SourceEvents ---------------------------------------------------------

  upsert(obj: KubeObject, origin: Origin): void {
    this.#heardFrom(origin);
    const id = objectId(obj);
    try {
      this.#apply(obj, origin);
      if (this.#rejected.delete(id)) log.info('object accepted after an earlier rejection', { origin, object: describeObject(obj) });
    } catch (err) {
      // Whatever the conversion threw, only this object is refused: nothing a
      // source delivers may stop the model.
      this.#reject(id, origin, obj, err);
    }
    this.#scheduleFlush();
  }

  remove(kind: string, namespace: string, name: string): void {
    const ns = kind === 'Namespace' ? '' : namespace || 'default';
    const key = ns ? namespacedKey(ns, name) : name;
    for (const groupKind of Object.values(KINDS)) {
      if (groupKind.endsWith(`/${kind}`)) this.#rejected.delete(`${groupKind}/${key}`);
    }
    switch (kind) {
      case 'Namespace': this.#removeNamespace(name); break;
      case 'Pod': this.#removePod(key); break;
      case 'Service': this.#removeService(key); break;
      case 'EndpointSlice': this.#removeSlice(key); break;
      case 'HTTPRoute':
      case 'GRPCRoute': {
        const routeKey = routeKeyOf(kind, key);
        if (this.#refusedRoutes.delete(routeKey)) this.#statusDirty = true;
        if (this.#routes.delete(routeKey)) this.#markDirty('route', routeKey);
        break;
      }
      case 'AuthorizationPolicy':
        if (this.#policies.delete(key)) this.#markDirty('policy', key);
        break;
      case 'ReferenceGrant':
        if (this.#grants.delete(key)) this.#routesDirty = true;
        break;
    }
    this.#scheduleFlush();
  }

  invalid(origin: Origin, object: string, error: Error): void {
    this.#heardFrom(origin);
    const field = error instanceof InvalidObjectError ? error.field : '';
    const reason = error instanceof InvalidObjectError ? reasonOf(error) : error.message;
    this.#rejected.set(`unparsed/${origin}/${object}`, { origin, object, field, reason });
    log.warn('rejected what the source could not apply', { origin, object, field, reason });
    this.#scheduleFlush();
  }

  reread(origin: Origin): void {
    this.#originsThisTick.delete(origin);
    this.#heardFrom(origin);
  }

  /** A new read of an origin replaces what its earlier reads could not parse. */
  #heardFrom(origin: Origin): void {
    if (this.#originsThisTick.has(origin)) return;
    this.#originsThisTick.add(origin);
    for (const [id, r] of this.#rejected) {
      if (id.startsWith('unparsed/') && r.origin === origin) this.#rejected.delete(id);
    }
  }

  synced(): void {
    if (this.#synced) return;
    this.#synced = true;
    this.#scheduleFlush();
  }

  // --- conversion -----------------------------------------------------------

  #apply(obj: KubeObject, origin: Origin): void {
    // The envelope the keys below are made of; each converter checks the rest.
    const f = new FieldReader(describeObject(obj));
    f.requiredString(obj.apiVersion, 'apiVersion');
    f.requiredString(obj.kind, 'kind');
    const meta = f.record(obj.metadata, 'metadata') ?? f.fail('metadata', 'required');
    f.requiredString(meta.name, 'metadata.name');
    f.string(meta.namespace, 'metadata.namespace');
    const group = obj.apiVersion.includes('/') ? obj.apiVersion.slice(0, obj.apiVersion.indexOf('/')) : '';
    const namespace = obj.metadata.namespace || 'default';
    const key = namespacedKey(namespace, obj.metadata.name);
    switch (`${group}/${obj.kind}`) {
      case KINDS.namespace: return this.#setNamespace(toNamespace(obj));
      case KINDS.pod: return this.#setPod(key, { ...obj, metadata: { ...obj.metadata, namespace } }, origin);
      case KINDS.service: return this.#setService(key, toService(obj));
      case KINDS.slice: return this.#setSlice(key, toEndpointSlice(obj));
      case KINDS.route:
      case KINDS.grpcRoute: {
        const routeKey = routeKeyOf(obj.kind, key);
        try {
          // Validate now, so a bad route is refused here; it is compiled again at flush.
          if (obj.kind === 'GRPCRoute') toGrpcRoute(obj, () => true);
          else toHttpRoute(obj, () => true);
        } catch (err) {
          const field = err instanceof InvalidObjectError ? err.field : '';
          const reason = err instanceof InvalidObjectError ? reasonOf(err) : String((err as Error)?.message ?? err);
          this.#refusedRoutes.set(routeKey, { raw: obj, field, reason });
          this.#statusDirty = true;
          throw err;
        }
        if (this.#refusedRoutes.delete(routeKey)) this.#statusDirty = true;
        this.#routes.set(routeKey, obj);
        this.#markDirty('route', routeKey);
        return;
      }
      case KINDS.grant:
        this.#grants.set(key, toReferenceGrant(obj));
        this.#routesDirty = true;
        return;
      case KINDS.policy:
        this.#policies.set(key, toAuthorizationPolicy(obj));
        this.#markDirty('policy', key);
        return;
      default:
        log.debug('ignoring a kind the mesh does not use', { origin, object: describeObject(obj), apiVersion: obj.apiVersion });
    }
  }

  #reject(id: string, origin: Origin, obj: KubeObject, err: unknown): void {
    if (err instanceof InvalidObjectError) {
      const reason = reasonOf(err);
      this.#rejected.set(id, { origin, object: err.object, field: err.field, reason });
      log.warn('rejected invalid object; the last accepted version (if any) stays in effect', { origin, object: err.object, field: err.field, reason });
      return;
    }
    // A converter bug, not the user's: still only this object is refused.
    const object = describeObject(obj);
    const reason = `could not be converted (${String((err as Error)?.message ?? err)}); the last accepted version (if any) stays in effect`;
    this.#rejected.set(id, { origin, object, field: '', reason });
    log.error('converting an object failed unexpectedly; it is refused, the rest of the config applies', { origin, object, error: String((err as Error)?.stack ?? err) });
  }

  #namespace(name: string): MeshNamespace {
    return this.#namespaces.get(name) ?? defaultNamespace(name);
  }

  #setNamespace(ns: MeshNamespace): void {
    const before = this.#namespace(ns.name);
    this.#namespaces.set(ns.name, ns);
    if (!isDeepStrictEqual(before, ns)) this.#reconvertPods(ns.name);
  }

  #removeNamespace(name: string): void {
    if (this.#namespaces.delete(name)) this.#reconvertPods(name);
  }

  /** Enrollment and mTLS mode come from the Namespace: convert its pods again. */
  #reconvertPods(namespace: string): void {
    // A copy: #setPod removes and re-adds each key, which would revisit it forever.
    for (const key of [...this.#podKeysByNamespace.get(namespace) ?? []]) {
      const entry = this.#pods.get(key)!;
      try {
        this.#setPod(key, entry.raw, entry.origin);
      } catch (err) {
        // One pod that no longer converts must not keep its Namespace or the other pods out.
        this.#reject(objectId(entry.raw), entry.origin, entry.raw, err);
      }
    }
  }

  #setPod(key: string, raw: KubeObject, origin: Origin): void {
    const namespace = raw.metadata.namespace!;
    const pod = toPod(raw, this.#namespace(namespace));
    if (pod) this.#checkUnique(key, raw, pod.workload);
    this.#removePod(key);
    this.#pods.set(key, { raw, origin, pod });
    let keys = this.#podKeysByNamespace.get(namespace);
    if (!keys) this.#podKeysByNamespace.set(namespace, (keys = new Set()));
    keys.add(key);
    if (!pod) return;
    const w = pod.workload;
    this.#podKeyByUid.set(w.uid, key);
    this.#podKeyByIp.set(w.ip, key);
    let uids = this.#uidsByNode.get(w.node);
    if (!uids) this.#uidsByNode.set(w.node, (uids = new Set()));
    uids.add(w.uid);
    this.#podLabels.set(key, namespace, w.labels);
    this.#markDirty('workload', w.uid);
    this.#markServicesSelecting(namespace, w.labels);
  }

  /** Two pods must not share a uid or an IP: the nodes index workloads by both. */
  #checkUnique(key: string, raw: KubeObject, w: Workload): void {
    const object = describeObject(raw);
    const uidOwner = this.#podKeyByUid.get(w.uid);
    if (uidOwner && uidOwner !== key) throw new InvalidObjectError(object, 'metadata.uid', `${w.uid} is already the uid of Pod ${uidOwner}`);
    const ipOwner = this.#podKeyByIp.get(w.ip);
    if (ipOwner && ipOwner !== key) throw new InvalidObjectError(object, 'status.podIP', `${w.ip} is already the IP of Pod ${ipOwner}`);
  }

  #removePod(key: string): void {
    const entry = this.#pods.get(key);
    if (!entry) return;
    this.#pods.delete(key);
    const namespace = entry.raw.metadata.namespace!;
    this.#podKeysByNamespace.get(namespace)?.delete(key);
    const w = entry.pod?.workload;
    if (!w) return;
    this.#podKeyByUid.delete(w.uid);
    this.#podKeyByIp.delete(w.ip);
    this.#uidsByNode.get(w.node)?.delete(w.uid);
    this.#podLabels.delete(key);
    this.#markDirty('workload', w.uid);
    this.#markServicesSelecting(namespace, w.labels);
  }

  #markServicesSelecting(namespace: string, labels: Record<string, string>): void {
    for (const key of this.#serviceSelectors.matching(namespace, labels)) this.#markDirty('service', key);
  }

  #setService(key: string, svc: MeshService): void {
    const existed = this.#services.has(key);
    this.#services.set(key, svc);
    if (svc.selector) this.#serviceSelectors.set(key, svc.service.namespace, svc.selector);
    else this.#serviceSelectors.delete(key);
    this.#markDirty('service', key);
    if (!existed) this.#routesDirty = true;
  }

  #removeService(key: string): void {
    if (!this.#services.delete(key)) return;
    this.#serviceSelectors.delete(key);
    this.#markDirty('service', key);
    this.#routesDirty = true;
  }

  #setSlice(key: string, slice: MeshEndpointSlice): void {
    this.#removeSlice(key);
    this.#slices.set(key, slice);
    const serviceKey = namespacedKey(slice.namespace, slice.serviceName);
    let keys = this.#sliceKeysByService.get(serviceKey);
    if (!keys) this.#sliceKeysByService.set(serviceKey, (keys = new Set()));
    keys.add(key);
    this.#markDirty('service', serviceKey);
  }

  #removeSlice(key: string): void {
    const slice = this.#slices.get(key);
    if (!slice) return;
    this.#slices.delete(key);
    const serviceKey = namespacedKey(slice.namespace, slice.serviceName);
    const keys = this.#sliceKeysByService.get(serviceKey);
    keys?.delete(key);
    if (keys?.size === 0) this.#sliceKeysByService.delete(serviceKey);
    this.#markDirty('service', serviceKey);
  }

  // --- resolution and publishing --------------------------------------------

  #markDirty(kind: ResourceKind, key: string): void {
    if (kind === 'route') this.#statusDirty = true;
    this.#dirty.add(`${kind}:${key}`);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    this.#originsThisTick.clear();
    // Routes are few; the set of Services they may point at changed: compile all again.
    if (this.#routesDirty) {
      this.#statusDirty = true;
      for (const key of this.#routes.keys()) this.#dirty.add(`route:${key}`);
      for (const key of this.#published.keys()) if (key.startsWith('route:')) this.#dirty.add(key);
      this.#routesDirty = false;
    }
    const version = this.#version + 1;
    const upserts: Resource[] = [];
    const removals: ResourceKey[] = [];
    for (const id of this.#dirty) {
      const colon = id.indexOf(':');
      const kind = id.slice(0, colon) as ResourceKind;
      const key = id.slice(colon + 1);
      let next: Resource | undefined;
      try {
        next = this.#resolve(kind, key, version);
      } catch (err) {
        // A bug in resolving one resource: the nodes keep what they were sent of it.
        log.error('resolving a resource failed; nodes keep its last version', { kind, key, error: String((err as Error)?.stack ?? err) });
        continue;
      }
      const current = this.#published.get(id);
      if (!next) {
        if (current) {
          this.#published.delete(id);
          removals.push({ kind, key });
        }
      } else if (!current || !isDeepStrictEqual(bodyOf(current), bodyOf(next))) {
        this.#published.set(id, next);
        upserts.push(next);
      }
    }
    this.#dirty.clear();
    if (upserts.length || removals.length) {
      this.#version = version;
      const delta: ConfigUpdate = { epoch: this.epoch, version, snapshot: false, upserts, removals };
      this.#history.push(delta);
      for (const listener of this.#listeners) {
        try {
          listener(delta);
        } catch (err) {
          log.error('update listener failed', { error: String((err as Error)?.stack ?? err) });
        }
      }
    }
    if (this.#statusDirty) this.#updateRouteStatus();
    if (this.#synced && !this.#syncPublished) {
      this.#syncPublished = true;
      for (const resolve of this.#syncWaiters.splice(0)) resolve();
    }
  }

  #resolve(kind: ResourceKind, key: string, version: number): Resource | undefined {
    switch (kind) {
      case 'settings': return { kind, key, version, settings: this.settings };
      case 'workload': {
        const workload = this.workloadByUid(key);
        return workload && { kind, key, version, workload };
      }
      case 'service': {
        const svc = this.#services.get(key);
        return svc && { kind, key, version, service: { ...svc.service, endpoints: this.#endpoints(key, svc) } };
      }
      case 'route': {
        const route = this.#compileRoute(key);
        return route && { kind, key, version, route };
      }
      case 'policy': {
        const policy = this.#policies.get(key);
        return policy && { kind, key, version, policy };
      }
    }
  }

  /** Every route's status again (routes are few); listeners hear of the ones that changed. */
  #updateRouteStatus(): void {
    this.#statusDirty = false;
    const exists = (ns: string, name: string) => this.#services.has(namespacedKey(ns, name));
    const keys = new Set([...this.#routes.keys(), ...this.#refusedRoutes.keys()]);
    for (const key of [...this.#routeStatus.keys()]) if (!keys.has(key)) this.#routeStatus.delete(key);
    for (const key of keys) {
      const refused = this.#refusedRoutes.get(key);
      const published = this.#published.get(`route:${key}`);
      const raw = refused?.raw ?? this.#routes.get(key)!;
      const previous = this.#routeStatus.get(key);
      let next: RouteStatus;
      try {
        next = routeStatusOf({
          raw, serviceExists: exists, previous,
          compiled: refused ? undefined : published?.kind === 'route' ? published.route : undefined,
          rejection: refused && { field: refused.field, reason: refused.reason },
        });
      } catch (err) {
        log.error('computing a route status failed; its last status stays', { route: key, error: String((err as Error)?.stack ?? err) });
        continue;
      }
      // No Service parent: nothing of ours to say.
      if (!next.parents.length) {
        this.#routeStatus.delete(key);
        continue;
      }
      if (sameConditions(previous, next)) continue;
      this.#routeStatus.set(key, next);
      for (const listener of this.#statusListeners) {
        try {
          listener(next);
        } catch (err) {
          log.error('route status listener failed', { error: String((err as Error)?.stack ?? err) });
        }
      }
    }
  }

  /** EndpointSlices are the truth when a Service has any; else its selector over pods. */
  #endpoints(serviceKey: string, svc: MeshService): Endpoint[] {
    const endpoints: Endpoint[] = [];
    const sliceKeys = this.#sliceKeysByService.get(serviceKey);
    if (sliceKeys?.size) {
      const seen = new Set<string>();
      for (const sliceKey of sliceKeys) {
        for (const e of this.#slices.get(sliceKey)!.endpoints) {
          if (seen.has(e.ip)) continue;
          seen.add(e.ip);
          endpoints.push({ workloadUid: e.podUid || this.workloadByIp(e.ip)?.uid || '', ip: e.ip, ready: e.ready });
        }
      }
    } else if (svc.selector) {
      for (const podKey of this.#podLabels.select(svc.service.namespace, svc.selector)) {
        const pod = this.#pods.get(podKey)!.pod!;
        endpoints.push({ workloadUid: pod.workload.uid, ip: pod.workload.ip, ready: pod.ready });
      }
    }
    return endpoints.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  }

  #compileRoute(key: string): HttpRoute | undefined {
    const raw = this.#routes.get(key);
    if (!raw) return undefined;
    const exists = (ns: string, name: string) => this.#services.has(namespacedKey(ns, name));
    const granted = (kind: string, from: string, to: string, name: string) => grantsRouteToService(this.#grants.values(), kind, from, to, name);
    const { route, ignoredParents } = raw.kind === 'GRPCRoute' ? toGrpcRoute(raw, exists, granted) : toHttpRoute(raw, exists, granted);
    for (const p of ignoredParents) log.info('route parent ignored', { object: describeObject(raw), field: p.field, reason: p.reason });
    // A route with no Service parent attaches to nothing in the mesh.
    return route.parents.length ? route : undefined;
  }
}

/**
 * The resource key of a route: "namespace/name" for an HTTPRoute, with the kind
 * in front for a GRPCRoute, so the two kinds may share a name.
 */
function routeKeyOf(kind: string, key: string): string {
  return kind === 'GRPCRoute' ? `GRPCRoute/${key}` : key;
}

/** The key rejections are kept under: "group/Kind/namespace/name". Safe on any value. */
function objectId(obj: KubeObject): string {
  const text = (v: unknown): string => (typeof v === 'string' ? v : '');
  const apiVersion = text(obj?.apiVersion);
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  const meta: unknown = obj?.metadata;
  const name = text(typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>).name : undefined);
  const namespace = text(typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>).namespace : undefined);
  const kind = text(obj?.kind);
  const key = kind === 'Namespace' ? name : namespacedKey(namespace || 'default', name);
  return `${group}/${kind}/${key}`;
}

/** An InvalidObjectError's reason, without the object and field it names separately. */
function reasonOf(err: InvalidObjectError): string {
  return err.message.slice(`${err.object}: ${err.field}: `.length);
}

function bodyOf(r: Resource): unknown {
  switch (r.kind) {
    case 'workload': return r.workload;
    case 'service': return r.service;
    case 'route': return r.route;
    case 'policy': return r.policy;
    case 'settings': return r.settings;
  }
}
