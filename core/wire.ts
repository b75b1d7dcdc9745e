// The control API at the edge: loads mesh.proto and converts its messages to and
// from domain types. A resource that does not convert is rejected alone: the
// caller gets an error naming it and keeps the rest of the update.

import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type {
  AuthorizationPolicy, ConfigUpdate, HttpRoute, MeshSettings, Resource, ResourceKey, ResourceKind, Service, Workload,
} from './types.ts';
import { InvalidObjectError } from './errors.ts';
import { routeRegexProblem } from './route-regex.ts';

const PROTO = fileURLToPath(new URL('../proto/nodemesh/v1/mesh.proto', import.meta.url));

/**
 * A DNS name every control-plane serving certificate carries. Nodes that dial the
 * control plane by IP verify this name instead: TLS forbids an IP as server name,
 * and what matters is that our own CA issued the certificate for the control plane.
 */
export const CONTROL_PLANE_TLS_NAME = 'nodemesh-controlplane';

export const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated `nodemesh.v1.Mesh` client constructor; `.service` is the server definition. */
export function meshService(): grpc.ServiceClientConstructor {
  if (!cached) {
    const def = protoLoader.loadSync(PROTO, LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as { nodemesh: { v1: { Mesh: grpc.ServiceClientConstructor } } };
    cached = pkg.nodemesh.v1.Mesh;
  }
  return cached;
}

// Wire shapes as proto-loader decodes them (camelCase, defaults filled in).
export interface WireResource {
  id: { kind: string; key: string };
  version: number;
  body?: string;
  workload?: Workload;
  service?: Service;
  route?: HttpRoute;
  policy?: WirePolicy;
  settings?: MeshSettings;
}

interface WirePolicy extends Omit<AuthorizationPolicy, 'selector'> {
  hasSelector: boolean;
  selector: Record<string, string>;
}

export interface WireUpdate {
  epoch: string;
  version: number;
  snapshot: boolean;
  upserts: WireResource[];
  removals: { kind: string; key: string }[];
  /** More parts of this snapshot follow. */
  more?: boolean;
}

/** Resources per message of a snapshot: keeps each under gRPC's 4 MiB default limit. */
export const SNAPSHOT_PART_SIZE = 2000;

const KINDS: ReadonlySet<string> = new Set(['workload', 'service', 'route', 'policy', 'settings']);

export function resourceToWire(r: Resource): WireResource {
  const id = { kind: r.kind, key: r.key };
  switch (r.kind) {
    case 'workload': return { id, version: r.version, workload: r.workload };
    case 'service': return { id, version: r.version, service: r.service };
    case 'route': return { id, version: r.version, route: r.route };
    case 'settings': return { id, version: r.version, settings: r.settings };
    case 'policy': {
      const { selector, ...rest } = r.policy;
      return { id, version: r.version, policy: { ...rest, hasSelector: selector !== null, selector: selector ?? {} } };
    }
  }
}

export function updateToWire(u: ConfigUpdate): WireUpdate {
  return { epoch: u.epoch, version: u.version, snapshot: u.snapshot, upserts: u.upserts.map(resourceToWire), removals: u.removals, more: false };
}

/** An update as the messages that carry it: a snapshot in parts, a delta whole. */
export function updateToMessages(u: ConfigUpdate, partSize = SNAPSHOT_PART_SIZE): WireUpdate[] {
  if (!u.snapshot || u.upserts.length <= partSize) return [updateToWire(u)];
  const parts: WireUpdate[] = [];
  for (let i = 0; i < u.upserts.length; i += partSize) {
    const upserts = u.upserts.slice(i, i + partSize).map(resourceToWire);
    parts.push({ epoch: u.epoch, version: u.version, snapshot: true, upserts, removals: [], more: i + partSize < u.upserts.length });
  }
  return parts;
}

/** Joins the parts of a snapshot back into one message; `undefined` while parts are missing. */
export class SnapshotAssembler {
  #parts: WireResource[] | undefined;

  accept(message: WireUpdate): WireUpdate | undefined {
    if (!message.snapshot) {
      // A delta cannot arrive mid-snapshot; if it does, the partial snapshot is unusable.
      this.#parts = undefined;
      return message;
    }
    const parts = (this.#parts ??= []);
    for (const r of message.upserts ?? []) parts.push(r);
    if (message.more) return undefined;
    this.#parts = undefined;
    return { ...message, upserts: parts, more: false };
  }

  reset(): void {
    this.#parts = undefined;
  }
}

/** Converts one wire resource; throws InvalidObjectError naming it when it is unusable. */
export function resourceFromWire(w: WireResource): Resource {
  const kind = w.id?.kind;
  const key = w.id?.key;
  const name = `${kind ?? '?'} ${JSON.stringify(key ?? '')}`;
  if (!kind || !KINDS.has(kind)) throw new InvalidObjectError(name, 'id.kind', `unknown kind ${JSON.stringify(kind)}`);
  if (!key) throw new InvalidObjectError(name, 'id.key', 'empty');
  if (w.body !== kind) throw new InvalidObjectError(name, 'body', `carries ${JSON.stringify(w.body)}, expected ${kind}`);
  const version = Number(w.version);
  switch (kind) {
    case 'workload': {
      const wl = w.workload!;
      if (!wl.ip) throw new InvalidObjectError(name, 'workload.ip', 'empty');
      if (wl.mtlsMode !== 'strict' && wl.mtlsMode !== 'permissive') throw new InvalidObjectError(name, 'workload.mtlsMode', `must be strict or permissive, got ${JSON.stringify(wl.mtlsMode)}`);
      // 0 on the wire is "not set": the node's default applies.
      const { maxConnections, maxConcurrentRequests, ...fields } = wl;
      const workload: Workload = { ...fields, labels: { ...wl.labels }, namedPorts: { ...wl.namedPorts } };
      if (maxConnections) workload.maxConnections = Number(maxConnections);
      if (maxConcurrentRequests) workload.maxConcurrentRequests = Number(maxConcurrentRequests);
      return { kind, key, version, workload };
    }
    case 'service':
      return { kind, key, version, service: w.service! };
    case 'route':
      checkRouteRegexes(name, w.route!);
      checkRouteRetries(name, w.route!);
      return { kind, key, version, route: w.route! };
    case 'settings':
      return { kind, key, version, settings: w.settings! };
    case 'policy': {
      const { hasSelector, selector, ...rest } = w.policy!;
      if (rest.action !== 'ALLOW' && rest.action !== 'DENY') throw new InvalidObjectError(name, 'policy.action', `must be ALLOW or DENY, got ${JSON.stringify(rest.action)}`);
      return { kind, key, version, policy: { ...rest, selector: hasSelector ? { ...selector } : null } };
    }
  }
  throw new InvalidObjectError(name, 'id.kind', 'unreachable');
}

/** A route with a regex the node cannot match in linear time (from an older control plane) is rejected alone. */
function checkRouteRegexes(name: string, route: HttpRoute): void {
  (route.rules ?? []).forEach((rule, r) => (rule.matches ?? []).forEach((m, i) => {
    const at = `route.rules[${r}].matches[${i}]`;
    const check = (field: string, source: string) => {
      const problem = routeRegexProblem(source);
      if (problem) throw new InvalidObjectError(name, field, problem);
    };
    if (m.path?.type === 'RegularExpression') check(`${at}.path.value`, m.path.value);
    (m.headers ?? []).forEach((h, j) => h.type === 'RegularExpression' && check(`${at}.headers[${j}].value`, h.value));
    (m.queryParams ?? []).forEach((q, j) => q.type === 'RegularExpression' && check(`${at}.queryParams[${j}].value`, q.value));
  }));
}

/** A rule's retry within what the control plane accepts: a hostile or broken one must not multiply a node's work. */
function checkRouteRetries(name: string, route: HttpRoute): void {
  (route.rules ?? []).forEach((rule, r) => {
    const retry = rule.retry;
    if (!retry) return;
    const at = `route.rules[${r}].retry`;
    if (retry.attempts > 10) throw new InvalidObjectError(name, `${at}.attempts`, `at most 10, got ${retry.attempts}`);
    if (retry.backoffMs > 60_000) throw new InvalidObjectError(name, `${at}.backoffMs`, `at most 60000, got ${retry.backoffMs}`);
    const bad = (retry.codes ?? []).findIndex((c) => c < 400 || c > 599);
    if (bad >= 0) throw new InvalidObjectError(name, `${at}.codes[${bad}]`, `not a status from 400 to 599: ${retry.codes[bad]}`);
  });
}

/** Converts an update; bad resources are dropped and returned in `rejected`. */
export function updateFromWire(w: WireUpdate): { update: ConfigUpdate; rejected: InvalidObjectError[] } {
  const upserts: Resource[] = [];
  const rejected: InvalidObjectError[] = [];
  for (const r of w.upserts ?? []) {
    try {
      upserts.push(resourceFromWire(r));
    } catch (err) {
      if (err instanceof InvalidObjectError) rejected.push(err);
      else throw err;
    }
  }
  const removals: ResourceKey[] = [];
  for (const k of w.removals ?? []) {
    if (KINDS.has(k.kind) && k.key) removals.push({ kind: k.kind as ResourceKind, key: k.key });
    else rejected.push(new InvalidObjectError(`${k.kind} ${JSON.stringify(k.key)}`, 'removals', 'unknown kind or empty key'));
  }
  return { update: { epoch: w.epoch, version: Number(w.version), snapshot: w.snapshot, upserts, removals }, rejected };
}
