// The status a route's owner reads: per Service parent, the Gateway API's
// `Accepted` and `ResolvedRefs` conditions with the spec's reasons, under our
// controllerName. Computed by the mesh model from what it compiled (or refused)
// of each HTTPRoute and GRPCRoute; written through the status subresource in
// Kubernetes (route-status-writer.ts), logged once per change and served by the
// control plane in file mode. Pure: the same inputs give the same conditions, and
// `sameConditions` ignores transition times, so an unchanged route is never
// written again (our own status write comes back through the watch).

import type { HttpRoute, ParentRef } from '../core/types.ts';
import type { KubeObject } from './source.ts';

/** The controllerName of every status entry nodemesh writes. */
export const CONTROLLER_NAME = 'nodemesh.io/mesh';

/** Reasons the spec gives ResolvedRefs=False, found as the prefix of a backendRef's invalidReason. */
const REF_REASONS = ['BackendNotFound', 'RefNotPermitted', 'InvalidKind', 'UnsupportedProtocol'] as const;

export interface RouteCondition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
  observedGeneration: number;
  lastTransitionTime: string;
}

export interface RouteParentStatus {
  parentRef: { group: ''; kind: 'Service'; namespace: string; name: string; port?: number };
  controllerName: string;
  conditions: RouteCondition[];
}

export interface RouteStatus {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** metadata.generation of the object the conditions are about (0 in file mode). */
  generation: number;
  parents: RouteParentStatus[];
}

export interface RouteStatusInput {
  raw: KubeObject;
  /** What the nodes were sent of the latest version; undefined when it was refused. */
  compiled?: HttpRoute;
  /** Why the latest version was refused. */
  rejection?: { field: string; reason: string };
  serviceExists: (namespace: string, name: string) => boolean;
  /** The status before: conditions that did not change keep their lastTransitionTime. */
  previous?: RouteStatus;
  now?: string;
}

export function routeStatusOf(input: RouteStatusInput): RouteStatus {
  const { raw, compiled, rejection, serviceExists, previous } = input;
  const now = input.now ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const namespace = raw.metadata.namespace || 'default';
  const gen: unknown = (raw.metadata as { generation?: unknown }).generation;
  const generation = typeof gen === 'number' ? gen : 0;
  const kind = raw.kind === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute';
  const parents = compiled?.parents ?? serviceParentsOf(raw, namespace);
  const resolved = compiled ? resolvedRefs(compiled) : undefined;
  return {
    kind, namespace, name: raw.metadata.name, generation,
    parents: parents.map((p) => {
      const conditions: Omit<RouteCondition, 'lastTransitionTime' | 'observedGeneration'>[] = [];
      if (rejection) {
        conditions.push({ type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: `${rejection.field}: ${rejection.reason}`.slice(0, 32_000) });
      } else if (!serviceExists(p.namespace, p.name)) {
        conditions.push({ type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message: `Service ${p.namespace}/${p.name} does not exist` });
      } else {
        conditions.push({ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'attached to the Service; the nodes route by it' });
      }
      if (resolved) conditions.push({ type: 'ResolvedRefs', ...resolved });
      const parentRef = { group: '' as const, kind: 'Service' as const, namespace: p.namespace, name: p.name, ...(p.port ? { port: p.port } : {}) };
      const before = previous?.parents.find((x) => sameParent(x.parentRef, parentRef));
      return {
        parentRef, controllerName: CONTROLLER_NAME,
        conditions: conditions.map((c) => {
          const old = before?.conditions.find((x) => x.type === c.type);
          return { ...c, observedGeneration: generation, lastTransitionTime: old && old.status === c.status ? old.lastTransitionTime : now };
        }),
      };
    }),
  };
}

/** ResolvedRefs of a compiled route: the first unusable backendRef's reason, every one in the message. */
function resolvedRefs(route: HttpRoute): Omit<RouteCondition, 'type' | 'lastTransitionTime' | 'observedGeneration'> {
  const problems: { reason: string; text: string }[] = [];
  route.rules.forEach((rule, r) => {
    const refs = [
      ...rule.backendRefs.map((b, i) => ({ at: `rules[${r}].backendRefs[${i}]`, b })),
      ...rule.filters.flatMap((x, i) => (x.mirror ? [{ at: `rules[${r}].filters[${i}].requestMirror.backendRef`, b: x.mirror }] : [])),
      ...rule.backendRefs.flatMap((b, i) => (b.filters ?? []).flatMap((x, j) => (x.mirror ? [{ at: `rules[${r}].backendRefs[${i}].filters[${j}].requestMirror.backendRef`, b: x.mirror }] : []))),
    ];
    for (const { at, b } of refs) {
      if (!b.invalidReason) continue;
      const prefix = b.invalidReason.split(':')[0]!;
      problems.push({ reason: (REF_REASONS as readonly string[]).includes(prefix) ? prefix : 'BackendNotFound', text: `${at}: ${b.invalidReason}` });
    }
  });
  if (!problems.length) return { status: 'True', reason: 'ResolvedRefs', message: 'every backendRef resolves' };
  return { status: 'False', reason: problems[0]!.reason, message: problems.map((p) => p.text).join('; ').slice(0, 32_000) };
}

/** The Service parents of a route that did not convert, read leniently: its status must still say why. */
function serviceParentsOf(raw: KubeObject, namespace: string): ParentRef[] {
  const spec = raw.spec as { parentRefs?: unknown } | undefined;
  const refs = Array.isArray(spec?.parentRefs) ? spec.parentRefs.slice(0, 32) : [];
  return refs.flatMap((p: unknown) => {
    if (typeof p !== 'object' || p === null) return [];
    const r = p as Record<string, unknown>;
    const group = typeof r.group === 'string' ? r.group : 'gateway.networking.k8s.io';
    if (r.kind !== 'Service' || (group !== '' && group !== 'core') || typeof r.name !== 'string' || !r.name) return [];
    return [{ namespace: typeof r.namespace === 'string' && r.namespace ? r.namespace : namespace, name: r.name, port: typeof r.port === 'number' ? r.port : 0 }];
  });
}

function sameParent(a: RouteParentStatus['parentRef'], b: RouteParentStatus['parentRef']): boolean {
  return a.namespace === b.namespace && a.name === b.name && (a.port ?? 0) === (b.port ?? 0);
}

/** Equal but for transition times: nothing to write. */
export function sameConditions(a: RouteStatus | undefined, b: RouteStatus | undefined): boolean {
  const strip = (s: RouteStatus | undefined) => s && { ...s, parents: s.parents.map((p) => ({ ...p, conditions: p.conditions.map(({ lastTransitionTime: _t, ...c }) => c) })) };
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}
