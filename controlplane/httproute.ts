// HTTPRoute (gateway.networking.k8s.io/v1) -> the compiled route the data plane
// applies, for GAMMA: parents are Services. Validation follows the Gateway API
// spec's schema and CEL rules; an unsupported feature rejects the route, as the
// spec asks of implementations, rather than being silently dropped.

import type {
  BackendRef, HeaderModifier, HeaderValue, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRetry, HttpRouteRule, NameMatch, ParentRef, PathModifier, StringMatch,
} from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, quote, type Fields } from './fields.ts';
import { parseGatewayDuration } from './gateway-duration.ts';
import { routeRegexProblem } from '../core/route-regex.ts';

/** Whether a Service exists, to mark backendRefs to missing ones unusable. */
export type ServiceExists = (namespace: string, name: string) => boolean;

/**
 * Whether a ReferenceGrant in `toNamespace` lets routes of `fromNamespace` (of
 * `fromKind`) refer to Service `toName` there. Without one, a cross-namespace
 * backendRef is RefNotPermitted, except a consumer route's own parent Service (GAMMA).
 */
export type RefPermitted = (fromKind: string, fromNamespace: string, toNamespace: string, toName: string) => boolean;

const NO_GRANTS: RefPermitted = () => false;

/** What a route's backendRefs are resolved against. */
export interface RefContext {
  serviceExists: ServiceExists;
  refPermitted: RefPermitted;
  /** The route's kind, as ReferenceGrants name it ("HTTPRoute", "GRPCRoute"). */
  kind: string;
  namespace: string;
  parents: readonly ParentRef[];
}

export interface IgnoredParent {
  field: string;
  reason: string;
}

export interface MeshHttpRoute {
  route: HttpRoute;
  /** parentRefs that are not Services: other implementations (gateways) handle those. */
  ignoredParents: IgnoredParent[];
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;
export const FILTER_TYPES = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror'] as const;
export type FilterType = (typeof FILTER_TYPES)[number];
const FILTER_FIELDS: Record<FilterType, string> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite',
  RequestMirror: 'requestMirror',
};
export const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;
const HOSTNAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const MAX_TIMEOUT_MS = 0xffffffff;

export function toHttpRoute(obj: KubeObject, serviceExists: ServiceExists, refPermitted: RefPermitted = NO_GRANTS): MeshHttpRoute {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const { meta, namespace, creationTimestamp, spec, parents, ignoredParents, hostnames } = routeCommon(f, obj);
  const rawRules = f.array(spec.rules, 'spec.rules', 16);
  const refs: RefContext = { serviceExists, refPermitted, kind: 'HTTPRoute', namespace, parents };
  const rules = (rawRules.length ? rawRules : [{}]).map((r, i) => rule(f, r, `spec.rules[${i}]`, refs));
  return {
    route: { namespace, name: meta.name, parents, hostnames, rules, creationTimestamp },
    ignoredParents,
  };
}

/** What HTTPRoute and GRPCRoute read alike: metadata, spec, parentRefs (Services kept, the rest ignored) and hostnames. */
export function routeCommon(f: FieldReader, obj: KubeObject, knownSpecFields?: readonly string[]) {
  const meta = f.metadata(obj);
  const namespace = meta.namespace || 'default';
  const creationTimestamp = f.string(meta.fields.creationTimestamp, 'metadata.creationTimestamp') ?? '';
  const spec = f.record(obj.spec, 'spec') ?? {};
  if (knownSpecFields) f.knownOnly(spec, 'spec', knownSpecFields);
  const ignoredParents: IgnoredParent[] = [];
  const parents: ParentRef[] = [];
  f.array(spec.parentRefs, 'spec.parentRefs', 32).forEach((p, i) => {
    const parent = parentRef(f, p, `spec.parentRefs[${i}]`, namespace);
    if ('reason' in parent) ignoredParents.push(parent);
    else parents.push(parent);
  });
  const hostnames = f.stringList(spec.hostnames, 'spec.hostnames');
  hostnames.forEach((h, i) => {
    if (h.length > 253 || !HOSTNAME.test(h)) f.fail(`spec.hostnames[${i}]`, `not a valid hostname (lower case, optional leading "*."): ${quote(h)}`);
  });
  return { meta, namespace, creationTimestamp, spec, parents, ignoredParents, hostnames };
}

export function parentRef(f: FieldReader, value: unknown, path: string, routeNamespace: string): ParentRef | IgnoredParent {
  const p = f.record(value, path) ?? {};
  const group = f.string(p.group, `${path}.group`) ?? 'gateway.networking.k8s.io';
  const kind = f.string(p.kind, `${path}.kind`) ?? 'Gateway';
  const name = f.requiredString(p.name, `${path}.name`);
  if (kind !== 'Service' || (group !== '' && group !== 'core')) {
    return { field: path, reason: `parent ${group || 'core'}/${kind} ${name} is not a Service (GAMMA); nodemesh routes only for Service parents` };
  }
  if (p.sectionName !== undefined) f.fail(`${path}.sectionName`, 'not supported for Service parents; select the Service port with "port"');
  return {
    namespace: f.string(p.namespace, `${path}.namespace`) || routeNamespace,
    name,
    port: f.port(p.port, `${path}.port`) ?? 0,
  };
}

function rule(f: FieldReader, value: unknown, path: string, refs: RefContext): HttpRouteRule {
  const r = f.record(value, path) ?? {};
  if (r.sessionPersistence !== undefined) f.fail(`${path}.sessionPersistence`, 'not supported by nodemesh');
  const rawMatches = f.array(r.matches, `${path}.matches`, 64);
  const matches = rawMatches.length
    ? rawMatches.map((m, i) => match(f, m, `${path}.matches[${i}]`))
    : [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: '' } satisfies HttpRouteMatch];
  const filters = f.array(r.filters, `${path}.filters`, 16).map((x, i) => filter(f, x, `${path}.filters[${i}]`, refs));
  checkFilterCombination(f, filters, matches, path);
  const backendRefs = f.array(r.backendRefs, `${path}.backendRefs`, 16).map((b, i) => {
    const at = `${path}.backendRefs[${i}]`;
    const ref = backendRef(f, b, at, refs);
    const raw = f.record(b, at) ?? {};
    const own = f.array(raw.filters, `${at}.filters`, 16).map((x, j) => filter(f, x, `${at}.filters[${j}]`, refs));
    checkFilterCombination(f, own, matches, at);
    if (own.length) ref.filters = own;
    own.forEach((x, j) => {
      if (x.type === 'RequestRedirect') f.fail(`${at}.filters[${j}].type`, 'a RequestRedirect answers before any backend is chosen; put it on the rule');
    });
    return ref;
  });
  if (backendRefs.length && filters.some((x) => x.type === 'RequestRedirect')) {
    f.fail(`${path}.filters`, 'RequestRedirect must not be used together with backendRefs');
  }
  const timeouts = f.record(r.timeouts, `${path}.timeouts`) ?? {};
  f.knownOnly(timeouts, `${path}.timeouts`, ['request', 'backendRequest']);
  const requestTimeoutMs = timeout(f, timeouts.request, `${path}.timeouts.request`);
  const backendRequestTimeoutMs = timeout(f, timeouts.backendRequest, `${path}.timeouts.backendRequest`);
  if (requestTimeoutMs && backendRequestTimeoutMs > requestTimeoutMs) {
    f.fail(`${path}.timeouts.backendRequest`, 'must not be longer than timeouts.request');
  }
  const out: HttpRouteRule = { matches, filters, backendRefs, requestTimeoutMs, backendRequestTimeoutMs };
  if (r.retry !== undefined) out.retry = retry(f, r.retry, `${path}.retry`);
  return out;
}

/** HTTPRouteRetry: codes 400-599, attempts, backoff as a Gateway API duration. */
function retry(f: FieldReader, value: unknown, path: string): HttpRouteRetry {
  const r = f.record(value, path) ?? {};
  f.knownOnly(r, path, ['codes', 'attempts', 'backoff']);
  const seen = new Set<number>();
  const codes = f.array(r.codes, `${path}.codes`, 32).flatMap((c, i) => {
    const code = f.integer(c, `${path}.codes[${i}]`, 400, 599)!;
    if (seen.has(code)) return [];
    seen.add(code);
    return [code];
  });
  const attempts = f.integer(r.attempts, `${path}.attempts`, 0, 10) ?? 1;
  const backoffMs = timeout(f, r.backoff, `${path}.backoff`);
  if (backoffMs > 60_000) f.fail(`${path}.backoff`, 'longer than 1m: a retry that late outlives most clients');
  return { codes, attempts, backoffMs };
}

function match(f: FieldReader, value: unknown, path: string): HttpRouteMatch {
  const m = f.record(value, path) ?? {};
  f.knownOnly(m, path, ['path', 'headers', 'queryParams', 'method']);
  return {
    path: pathMatch(f, m.path, `${path}.path`),
    headers: nameMatches(f, m.headers, `${path}.headers`, true),
    queryParams: nameMatches(f, m.queryParams, `${path}.queryParams`, false),
    method: f.oneOf(m.method, `${path}.method`, METHODS) ?? '',
  };
}

function pathMatch(f: FieldReader, value: unknown, path: string): StringMatch {
  const p = f.record(value, path) ?? {};
  const type = f.oneOf(p.type, `${path}.type`, ['Exact', 'PathPrefix', 'RegularExpression']) ?? 'PathPrefix';
  const v = f.string(p.value, `${path}.value`) ?? '/';
  if (v.length > 1024) f.fail(`${path}.value`, 'longer than 1024 characters');
  if (type === 'RegularExpression') {
    checkRegex(f, v, `${path}.value`);
  } else {
    checkPath(f, v, `${path}.value`);
  }
  return { type, value: v };
}

/** The Gateway API's CEL rules for Exact and PathPrefix paths (and path modifiers). */
function checkPath(f: FieldReader, v: string, path: string): void {
  if (!v.startsWith('/')) f.fail(path, `must be an absolute path starting with "/", got ${quote(v)}`);
  for (const bad of ['//', '/./', '/../', '%2f', '%2F', '#']) {
    if (v.includes(bad)) f.fail(path, `must not contain ${quote(bad)}`);
  }
  if (v.endsWith('/..') || v.endsWith('/.')) f.fail(path, 'must not end with "/.." or "/."');
  if (!PATH_CHARS.test(v)) f.fail(path, `contains characters not allowed in a path: ${quote(v)}`);
}

/** What the node matches with (core/route-regex.ts: RE2's language, linear time); anything else rejects the route. */
export function checkRegex(f: FieldReader, v: string, path: string): void {
  const problem = routeRegexProblem(v);
  if (problem) f.fail(path, problem);
}

export function nameMatches(f: FieldReader, value: unknown, path: string, isHeader: boolean): NameMatch[] {
  const seen = new Set<string>();
  const out: NameMatch[] = [];
  f.array(value, path, 16).forEach((x, i) => {
    const p = `${path}[${i}]`;
    const m = f.record(x, p) ?? {};
    const type = f.oneOf(m.type, `${p}.type`, ['Exact', 'RegularExpression']) ?? 'Exact';
    let name = f.requiredString(m.name, `${p}.name`);
    const v = f.string(m.value, `${p}.value`);
    if (v === undefined || v === '') f.fail(`${p}.value`, 'required');
    if (isHeader) {
      if (!HEADER_NAME.test(name)) f.fail(`${p}.name`, `not a valid HTTP header name: ${quote(name)}`);
      name = name.toLowerCase();
    } else if (name.length > 256) {
      f.fail(`${p}.name`, 'longer than 256 characters');
    }
    if (v.length > (isHeader ? 4096 : 1024)) f.fail(`${p}.value`, `longer than ${isHeader ? 4096 : 1024} characters`);
    if (type === 'RegularExpression') checkRegex(f, v, `${p}.value`);
    // The spec: of entries with an equivalent name only the first is considered.
    if (seen.has(name)) return;
    seen.add(name);
    out.push({ type, name, value: v });
  });
  return out;
}

export function filter(f: FieldReader, value: unknown, path: string, refs: RefContext, allowed: readonly FilterType[] = FILTER_TYPES): HttpRouteFilter {
  const x = f.record(value, path) ?? {};
  const typeName = f.requiredString(x.type, `${path}.type`);
  if (!(allowed as readonly string[]).includes(typeName)) {
    f.fail(`${path}.type`, `filter ${quote(typeName)} is not supported by nodemesh here; supported: ${allowed.join(', ')}`);
  }
  const type = typeName as FilterType;
  const configField = FILTER_FIELDS[type];
  for (const other of Object.values(FILTER_FIELDS)) {
    if (other !== configField && x[other] !== undefined) f.fail(`${path}.${other}`, `must not be set for a ${type} filter`);
  }
  const config = f.record(x[configField], `${path}.${configField}`);
  if (!config) f.fail(`${path}.${configField}`, `required for a ${type} filter`);
  const cpath = `${path}.${configField}`;
  const out: HttpRouteFilter = { type, scheme: '', hostname: '', port: 0, statusCode: 0 };
  switch (type) {
    case 'RequestHeaderModifier':
    case 'ResponseHeaderModifier':
      out.headerModifier = headerModifier(f, config, cpath);
      break;
    case 'RequestRedirect':
      f.knownOnly(config, cpath, ['scheme', 'hostname', 'path', 'port', 'statusCode']);
      out.scheme = f.oneOf(config.scheme, `${cpath}.scheme`, ['http', 'https']) ?? '';
      out.hostname = hostname(f, config.hostname, `${cpath}.hostname`);
      out.path = pathModifier(f, config.path, `${cpath}.path`);
      out.port = f.port(config.port, `${cpath}.port`) ?? 0;
      out.statusCode = f.integer(config.statusCode, `${cpath}.statusCode`, 0, 999) ?? 302;
      if (![301, 302, 303, 307, 308].includes(out.statusCode)) f.fail(`${cpath}.statusCode`, `must be one of 301, 302, 303, 307, 308, got ${out.statusCode}`);
      break;
    case 'URLRewrite':
      f.knownOnly(config, cpath, ['hostname', 'path']);
      out.hostname = hostname(f, config.hostname, `${cpath}.hostname`);
      out.path = pathModifier(f, config.path, `${cpath}.path`);
      break;
    case 'RequestMirror': {
      f.knownOnly(config, cpath, ['backendRef', 'percent', 'fraction']);
      if (config.percent !== undefined || config.fraction !== undefined) {
        f.fail(`${cpath}.${config.percent !== undefined ? 'percent' : 'fraction'}`, 'not supported by nodemesh: every request is mirrored');
      }
      const ref = f.record(config.backendRef, `${cpath}.backendRef`) ?? f.fail(`${cpath}.backendRef`, 'required');
      if (ref.weight !== undefined) f.fail(`${cpath}.backendRef.weight`, 'not allowed on a mirror');
      out.mirror = backendRef(f, ref, `${cpath}.backendRef`, refs);
      break;
    }
  }
  return out;
}

export function headerModifier(f: FieldReader, config: Fields, path: string): HeaderModifier {
  f.knownOnly(config, path, ['set', 'add', 'remove']);
  const values = (field: 'set' | 'add'): HeaderValue[] => {
    const seen = new Set<string>();
    return f.array(config[field], `${path}.${field}`, 16).map((x, i) => {
      const p = `${path}.${field}[${i}]`;
      const h = f.record(x, p) ?? {};
      const name = f.requiredString(h.name, `${p}.name`);
      if (!HEADER_NAME.test(name)) f.fail(`${p}.name`, `not a valid HTTP header name: ${quote(name)}`);
      if (seen.has(name.toLowerCase())) f.fail(`${p}.name`, `header ${quote(name)} is listed twice`);
      seen.add(name.toLowerCase());
      return { name, value: f.string(h.value, `${p}.value`) ?? '' };
    });
  };
  const remove = f.stringList(config.remove, `${path}.remove`);
  if (remove.length > 16) f.fail(`${path}.remove`, `at most 16 entries allowed, got ${remove.length}`);
  remove.forEach((name, i) => {
    if (!HEADER_NAME.test(name)) f.fail(`${path}.remove[${i}]`, `not a valid HTTP header name: ${quote(name)}`);
  });
  return { set: values('set'), add: values('add'), remove };
}

function hostname(f: FieldReader, value: unknown, path: string): string {
  const h = f.string(value, path) ?? '';
  if (h && (h.length > 253 || !HOSTNAME.test(h) || h.startsWith('*'))) f.fail(path, `not a valid hostname: ${quote(h)}`);
  return h;
}

function pathModifier(f: FieldReader, value: unknown, path: string): PathModifier | undefined {
  const p = f.record(value, path);
  if (!p) return undefined;
  f.knownOnly(p, path, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  const type = f.oneOf(p.type, `${path}.type`, ['ReplaceFullPath', 'ReplacePrefixMatch']);
  if (!type) f.fail(`${path}.type`, 'required: ReplaceFullPath or ReplacePrefixMatch');
  const field = type === 'ReplaceFullPath' ? 'replaceFullPath' : 'replacePrefixMatch';
  const other = type === 'ReplaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (p[other] !== undefined) f.fail(`${path}.${other}`, `must not be set when type is ${type}`);
  const v = f.string(p[field], `${path}.${field}`);
  if (v === undefined) f.fail(`${path}.${field}`, `required when type is ${type}`);
  if (v.length > 1024) f.fail(`${path}.${field}`, 'longer than 1024 characters');
  checkPath(f, v, `${path}.${field}`);
  return { type, value: v };
}

export function checkFilterCombination(f: FieldReader, filters: HttpRouteFilter[], matches: HttpRouteMatch[], path: string): void {
  const seen = new Set<string>();
  filters.forEach((x, i) => {
    // The spec allows several mirrors; every other filter once.
    if (seen.has(x.type) && x.type !== 'RequestMirror') f.fail(`${path}.filters[${i}].type`, `${x.type} may appear only once per rule`);
    seen.add(x.type);
  });
  if (seen.has('RequestRedirect') && seen.has('URLRewrite')) {
    f.fail(`${path}.filters`, 'RequestRedirect and URLRewrite cannot be used in the same rule');
  }
  filters.forEach((x, i) => {
    if (x.path?.type !== 'ReplacePrefixMatch') return;
    const bad = matches.findIndex((m) => m.path?.type !== 'PathPrefix');
    if (bad >= 0) {
      f.fail(`${path}.filters[${i}].${FILTER_FIELDS[x.type]}.path.type`, `ReplacePrefixMatch requires every match to be a PathPrefix match; matches[${bad}] is ${matches[bad]!.path?.type}`);
    }
  });
}

/** A backendRef's target; its `filters` are the caller's. Cross-namespace targets need a ReferenceGrant, except a route's own parent. */
export function backendRef(f: FieldReader, value: unknown, path: string, refs: RefContext): BackendRef {
  const b = f.record(value, path) ?? {};
  const routeNamespace = refs.namespace;
  const group = f.string(b.group, `${path}.group`) ?? '';
  const kind = f.string(b.kind, `${path}.kind`) ?? 'Service';
  const name = f.requiredString(b.name, `${path}.name`);
  const namespace = f.string(b.namespace, `${path}.namespace`) || routeNamespace;
  const port = f.port(b.port, `${path}.port`) ?? 0;
  const weight = f.integer(b.weight, `${path}.weight`, 0, 1_000_000) ?? 1;
  let invalidReason = '';
  if (kind !== 'Service' || (group !== '' && group !== 'core')) {
    invalidReason = `InvalidKind: backend ${group || 'core'}/${kind} ${name} is not a Service`;
  } else if (port === 0) {
    f.fail(`${path}.port`, 'required when the backend is a Service');
  } else if (namespace !== routeNamespace && !isOwnParent(refs.parents, namespace, name) && !refs.refPermitted(refs.kind, routeNamespace, namespace, name)) {
    invalidReason = `RefNotPermitted: backend ${namespace}/${name} is in another namespace and no ReferenceGrant in ${namespace} allows ${refs.kind}s of ${routeNamespace} to refer to it`;
  } else if (!refs.serviceExists(namespace, name)) {
    invalidReason = `BackendNotFound: Service ${namespace}/${name} does not exist`;
  }
  return { namespace, name, port, weight, invalidReason };
}

/** GAMMA: a consumer route may send its traffic on to the very Service it attaches to. */
function isOwnParent(parents: readonly ParentRef[], namespace: string, name: string): boolean {
  return parents.some((p) => p.namespace === namespace && p.name === name);
}

function timeout(f: FieldReader, value: unknown, path: string): number {
  const s = f.string(value, path);
  if (s === undefined) return 0;
  const ms = parseGatewayDuration(s);
  if (ms === null) f.fail(path, `not a Gateway API duration (e.g. "10s", "500ms", "1h30m"): ${quote(s)}`);
  if (ms > MAX_TIMEOUT_MS) f.fail(path, `longer than ${MAX_TIMEOUT_MS} ms`);
  return ms;
}
