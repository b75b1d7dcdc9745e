// HTTPRoute matching for Service parents (GAMMA), pure and precompiled. The
// routes that apply to a request depend on who asks: consumer routes (in the
// client's namespace, for another namespace's Service) apply to that namespace's
// clients only and replace the producer routes (in the Service's namespace) for
// them. Among the applicable matches the Gateway API precedence decides: Exact
// path, then the longest PathPrefix, then RegularExpression paths (their order
// is implementation-specific; longest first here), then a method match, then the
// most header matches, then the most query-param matches; remaining ties go to
// the oldest route, then namespace/name, then rule and match order.

import type { HttpRoute, HttpRouteMatch, HttpRouteRule, NameMatch } from '../../core/types.ts';
import { compileRouteRegex } from '../../core/route-regex.ts';

export interface RouteRequest {
  method: string;
  /** The path without the query string. */
  path: string;
  query: URLSearchParams;
  /** Lower-case names, as node:http delivers them. */
  headers: Record<string, string | string[] | undefined>;
}

export interface ServiceRef {
  namespace: string;
  name: string;
}

export type RouteDecision =
  /** No route attaches to this Service port for this client: send to the Service itself. */
  | { kind: 'unrouted' }
  /** Routes attach but none matches: 404, as the Gateway API specifies (UNIMPLEMENTED when a GRPCRoute attaches). */
  | { kind: 'no-match'; grpc: boolean }
  | { kind: 'matched'; route: HttpRoute; rule: HttpRouteRule; match: HttpRouteMatch };

interface CompiledMatch {
  route: HttpRoute;
  rule: HttpRouteRule;
  match: HttpRouteMatch;
  /** Parent Service port, 0 for every port. */
  parentPort: number;
  test: (req: RouteRequest) => boolean;
  rank: number[];
  order: string;
}

export class RouteTable {
  /** Keyed by the parent Service "namespace/name". */
  readonly #byParent = new Map<string, CompiledMatch[]>();

  constructor(routes: readonly HttpRoute[]) {
    const sortedRoutes = [...routes].sort(routeOrder);
    sortedRoutes.forEach((route, routeIndex) => {
      for (const parent of route.parents) {
        const key = `${parent.namespace}/${parent.name}`;
        const list = this.#byParent.get(key) ?? [];
        route.rules.forEach((rule, ruleIndex) => {
          rule.matches.forEach((match, matchIndex) => {
            list.push({
              route, rule, match, parentPort: parent.port, test: compileMatch(match), rank: rankOf(match),
              order: `${pad(routeIndex)}.${pad(ruleIndex)}.${pad(matchIndex)}`,
            });
          });
        });
        this.#byParent.set(key, list);
      }
    });
    for (const list of this.#byParent.values()) list.sort(precedence);
  }

  /** True when some route attaches to `service` (any port, any client): its port may need L7 handling. */
  hasRoutes(service: ServiceRef): boolean {
    return this.#byParent.has(`${service.namespace}/${service.name}`);
  }

  decide(service: ServiceRef, port: number, clientNamespace: string, req: RouteRequest): RouteDecision {
    const candidates = this.#applicable(service, port, clientNamespace);
    if (candidates.length === 0) return { kind: 'unrouted' };
    const hit = candidates.find((c) => c.test(req));
    if (hit) return { kind: 'matched', route: hit.route, rule: hit.rule, match: hit.match };
    return { kind: 'no-match', grpc: candidates.some((c) => c.route.kind === 'GRPCRoute') };
  }

  #applicable(service: ServiceRef, port: number, clientNamespace: string): CompiledMatch[] {
    const all = (this.#byParent.get(`${service.namespace}/${service.name}`) ?? []).filter((c) => c.parentPort === 0 || c.parentPort === port);
    if (clientNamespace !== service.namespace) {
      const consumer = all.filter((c) => c.route.namespace === clientNamespace);
      if (consumer.length) return consumer;
    }
    // Producer routes; routes from a third namespace apply to nobody else.
    return all.filter((c) => c.route.namespace === service.namespace);
  }
}

function pad(n: number): string {
  return String(n).padStart(4, '0');
}

function routeOrder(a: HttpRoute, b: HttpRoute): number {
  const ta = Date.parse(a.creationTimestamp);
  const tb = Date.parse(b.creationTimestamp);
  // A route without a timestamp sorts last: it cannot claim to be older.
  const va = Number.isNaN(ta) ? Infinity : ta;
  const vb = Number.isNaN(tb) ? Infinity : tb;
  if (va !== vb) return va < vb ? -1 : 1;
  const na = `${a.namespace}/${a.name}`;
  const nb = `${b.namespace}/${b.name}`;
  return na < nb ? -1 : na > nb ? 1 : 0;
}

/** Higher sorts first, element by element. */
function rankOf(m: HttpRouteMatch): number[] {
  const path = m.path ?? { type: 'PathPrefix' as const, value: '/' };
  const pathKind = path.type === 'Exact' ? 3 : path.type === 'PathPrefix' ? 2 : 1;
  return [pathKind, normalizePrefix(path.value).length, m.method ? 1 : 0, m.headers.length, m.queryParams.length];
}

function precedence(a: CompiledMatch, b: CompiledMatch): number {
  for (let i = 0; i < a.rank.length; i++) {
    const d = b.rank[i]! - a.rank[i]!;
    if (d !== 0) return d;
  }
  return a.order < b.order ? -1 : a.order > b.order ? 1 : 0;
}

/** "/foo/" and "/foo" are the same prefix; "/" stays "/". */
export function normalizePrefix(prefix: string): string {
  return prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
}

/** Element-wise prefix: "/foo" matches "/foo", "/foo/" and "/foo/bar", never "/foobar". */
export function pathPrefixMatches(prefix: string, path: string): boolean {
  const p = normalizePrefix(prefix);
  if (p === '/') return path.startsWith('/');
  return path === p || path.startsWith(`${p}/`);
}

/** Whole-value, linear-time (core/route-regex.ts): the control plane and the node's wire edge rejected what it cannot run. */
function fullRegex(source: string): RegExp {
  return compileRouteRegex(source);
}

function compileMatch(m: HttpRouteMatch): (req: RouteRequest) => boolean {
  const tests: ((req: RouteRequest) => boolean)[] = [];
  const path = m.path;
  if (path) {
    if (path.type === 'Exact') tests.push((r) => r.path === path.value);
    else if (path.type === 'PathPrefix') tests.push((r) => pathPrefixMatches(path.value, r.path));
    else {
      const re = fullRegex(path.value);
      tests.push((r) => re.test(r.path));
    }
  }
  if (m.method) tests.push((r) => r.method === m.method);
  for (const h of m.headers) {
    const matches = valueMatcher(h);
    const name = h.name.toLowerCase();
    tests.push((r) => {
      const v = r.headers[name];
      return v !== undefined && matches(Array.isArray(v) ? v.join(',') : v);
    });
  }
  for (const q of m.queryParams) {
    const matches = valueMatcher(q);
    tests.push((r) => {
      // The spec: with repeated parameters only the first value is considered.
      const v = r.query.get(q.name);
      return v !== null && matches(v);
    });
  }
  return (req) => tests.every((t) => t(req));
}

function valueMatcher(m: NameMatch): (value: string) => boolean {
  if (m.type === 'Exact') return (v) => v === m.value;
  const re = fullRegex(m.value);
  return (v) => re.test(v);
}

/** One backendRef index by weight; -1 when every weight is 0. `random` returns [0, 1). */
export function pickWeighted(weights: readonly number[], random: () => number = Math.random): number {
  const total = weights.reduce((sum, w) => sum + Math.max(0, w), 0);
  if (total <= 0) return -1;
  let x = random() * total;
  for (let i = 0; i < weights.length; i++) {
    const w = Math.max(0, weights[i]!);
    if (x < w) return i;
    x -= w;
  }
  return weights.findLastIndex((w) => w > 0);
}
