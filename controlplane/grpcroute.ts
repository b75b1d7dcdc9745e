// GRPCRoute (gateway.networking.k8s.io/v1) -> the same compiled route an
// HTTPRoute becomes, with `kind: 'GRPCRoute'`, for GAMMA (Service parents). A gRPC
// call is an HTTP/2 POST to "/<service>/<method>", so a method match is a path
// match: service and method Exact -> the Exact path, service alone -> the
// "/<service>" prefix, method alone or RegularExpression -> a whole-path regex,
// linear-time like every route regex (core/route-regex.ts). The data plane needs
// nothing else to route a call; what differs is how the mesh answers for itself
// (the `kind` tells it: gRPC statuses instead of HTTP ones). Validation follows the
// spec's schema and CEL rules; an unsupported field rejects the route alone.

import type { HttpRouteMatch, HttpRouteRule, StringMatch } from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, quote } from './fields.ts';
import {
  backendRef, checkFilterCombination, checkRegex, filter, nameMatches, routeCommon,
  type FilterType, type MeshHttpRoute, type RefContext, type RefPermitted, type ServiceExists,
} from './httproute.ts';

/** GRPCRoute allows these filters (ExtensionRef is implementation-specific and not ours). */
const GRPC_FILTERS: readonly FilterType[] = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror'];
/** The spec's patterns for an Exact service and method. */
const SERVICE_NAME = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const METHOD_NAME = /^[A-Za-z_][A-Za-z_0-9]*$/;
/** Any one path segment: what an absent service or method matches in a regex match. */
const ANY_SEGMENT = '[^/]+';

export function toGrpcRoute(obj: KubeObject, serviceExists: ServiceExists, refPermitted: RefPermitted = () => false): MeshHttpRoute {
  const f = new FieldReader(describeObject(obj));
  const { meta, namespace, creationTimestamp, spec, parents, ignoredParents, hostnames } = routeCommon(f, obj, ['parentRefs', 'hostnames', 'rules']);
  const refs: RefContext = { serviceExists, refPermitted, kind: 'GRPCRoute', namespace, parents };
  const rawRules = f.array(spec.rules, 'spec.rules', 16);
  const rules = (rawRules.length ? rawRules : [{}]).map((r, i) => rule(f, r, `spec.rules[${i}]`, refs));
  return {
    route: { kind: 'GRPCRoute', namespace, name: meta.name, parents, hostnames, rules, creationTimestamp },
    ignoredParents,
  };
}

function rule(f: FieldReader, value: unknown, path: string, refs: RefContext): HttpRouteRule {
  const r = f.record(value, path) ?? {};
  f.knownOnly(r, path, ['name', 'matches', 'filters', 'backendRefs']);
  const rawMatches = f.array(r.matches, `${path}.matches`, 64);
  const matches = rawMatches.length
    ? rawMatches.map((m, i) => match(f, m, `${path}.matches[${i}]`))
    : [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: '' } satisfies HttpRouteMatch];
  const filters = f.array(r.filters, `${path}.filters`, 16).map((x, i) => filter(f, x, `${path}.filters[${i}]`, refs, GRPC_FILTERS));
  checkFilterCombination(f, filters, matches, path);
  const backendRefs = f.array(r.backendRefs, `${path}.backendRefs`, 16).map((b, i) => {
    const at = `${path}.backendRefs[${i}]`;
    const raw = f.record(b, at) ?? {};
    f.knownOnly(raw, at, ['group', 'kind', 'name', 'namespace', 'port', 'weight', 'filters']);
    const ref = backendRef(f, raw, at, refs);
    const own = f.array(raw.filters, `${at}.filters`, 16).map((x, j) => filter(f, x, `${at}.filters[${j}]`, refs, GRPC_FILTERS));
    checkFilterCombination(f, own, matches, at);
    if (own.length) ref.filters = own;
    return ref;
  });
  return { matches, filters, backendRefs, requestTimeoutMs: 0, backendRequestTimeoutMs: 0 };
}

function match(f: FieldReader, value: unknown, path: string): HttpRouteMatch {
  const m = f.record(value, path) ?? {};
  f.knownOnly(m, path, ['method', 'headers']);
  return { path: methodMatch(f, m.method, `${path}.method`), headers: nameMatches(f, m.headers, `${path}.headers`, true), queryParams: [], method: '' };
}

/** A GRPCMethodMatch as the path match it is on the wire. */
function methodMatch(f: FieldReader, value: unknown, path: string): StringMatch {
  const m = f.record(value, path);
  if (!m) return { type: 'PathPrefix', value: '/' };
  f.knownOnly(m, path, ['type', 'service', 'method']);
  const type = f.oneOf(m.type, `${path}.type`, ['Exact', 'RegularExpression']) ?? 'Exact';
  const service = f.string(m.service, `${path}.service`) ?? '';
  const method = f.string(m.method, `${path}.method`) ?? '';
  if (!service && !method) f.fail(path, 'one or both of service and method must be set');
  if (service.length > 1024) f.fail(`${path}.service`, 'longer than 1024 characters');
  if (method.length > 1024) f.fail(`${path}.method`, 'longer than 1024 characters');
  if (type === 'Exact') {
    if (service && !SERVICE_NAME.test(service)) f.fail(`${path}.service`, `not a gRPC service name (e.g. "pkg.Service"): ${quote(service)}`);
    if (method && !METHOD_NAME.test(method)) f.fail(`${path}.method`, `not a gRPC method name (e.g. "SayHello"): ${quote(method)}`);
    if (service && method) return { type: 'Exact', value: `/${service}/${method}` };
    if (service) return { type: 'PathPrefix', value: `/${service}` };
    return { type: 'RegularExpression', value: `/${ANY_SEGMENT}/${method}` };
  }
  if (service) checkRegex(f, service, `${path}.service`);
  if (method) checkRegex(f, method, `${path}.method`);
  const whole = `/(?:${service || ANY_SEGMENT})/(?:${method || ANY_SEGMENT})`;
  checkRegex(f, whole, path);
  return { type: 'RegularExpression', value: whole };
}
