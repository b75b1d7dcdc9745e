import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toHttpRoute } from './httproute.ts';
import { parseGatewayDuration } from './gateway-duration.ts';
import type { KubeObject } from './source.ts';
import { InvalidObjectError } from '../core/errors.ts';

const SERVICES = new Set(['demo/server', 'demo/server-b']);
const exists = (ns: string, name: string) => SERVICES.has(`${ns}/${name}`);
const PARENT = { group: '', kind: 'Service', name: 'server', port: 8080 };

function route(spec: Record<string, unknown>): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
    metadata: { name: 'canary', namespace: 'demo', creationTimestamp: '2025-01-01T00:00:00Z' },
    spec: { parentRefs: [PARENT], ...spec },
  };
}

const rule = (r: Record<string, unknown>) => route({ rules: [{ backendRefs: [{ name: 'server', port: 8080 }], ...r }] });

test('a GAMMA route compiles matches, filters, weighted backends and timeouts', () => {
  const { route: r, ignoredParents } = toHttpRoute(route({
    parentRefs: [PARENT, { name: 'public-gw' }],
    rules: [
      {
        matches: [{ path: { type: 'Exact', value: '/api' }, headers: [{ name: 'X-Canary', value: 'true' }, { name: 'x-canary', value: 'ignored' }], queryParams: [{ type: 'RegularExpression', name: 'v', value: '^2' }], method: 'GET' }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-env', value: 'canary' }], add: [{ name: 'x-hop', value: '1' }], remove: ['x-debug'] } }],
        backendRefs: [{ name: 'server-b', port: 8080, weight: 90 }, { name: 'server', port: 8080 }],
        timeouts: { request: '1h30m', backendRequest: '500ms' },
      },
      { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }], backendRefs: [{ name: 'server', port: 8080 }] },
      { filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', statusCode: 301 } }] },
    ],
  }), exists);
  assert.deepEqual(ignoredParents.map((p) => p.field), ['spec.parentRefs[1]']);
  assert.match(ignoredParents[0]!.reason, /gateway\.networking\.k8s\.io\/Gateway public-gw is not a Service/);
  assert.deepEqual(r.parents, [{ namespace: 'demo', name: 'server', port: 8080 }]);
  assert.equal(r.creationTimestamp, '2025-01-01T00:00:00Z');
  const [first, second, third] = r.rules;
  assert.deepEqual(first!.matches, [{ path: { type: 'Exact', value: '/api' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'true' }], queryParams: [{ type: 'RegularExpression', name: 'v', value: '^2' }], method: 'GET' }]);
  assert.deepEqual(first!.filters[0]!.headerModifier, { set: [{ name: 'x-env', value: 'canary' }], add: [{ name: 'x-hop', value: '1' }], remove: ['x-debug'] });
  assert.deepEqual(first!.backendRefs, [
    { namespace: 'demo', name: 'server-b', port: 8080, weight: 90, invalidReason: '' },
    { namespace: 'demo', name: 'server', port: 8080, weight: 1, invalidReason: '' },
  ]);
  assert.equal(first!.requestTimeoutMs, 5_400_000);
  assert.equal(first!.backendRequestTimeoutMs, 500);
  assert.deepEqual(second!.filters[0]!.path, { type: 'ReplacePrefixMatch', value: '/new' });
  assert.deepEqual(third!.matches, [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: '' }], 'default match');
  assert.equal(third!.filters[0]!.statusCode, 301);
  assert.equal(third!.filters[0]!.scheme, 'https');
});

test('a route without rules gets one default rule; unusable backends carry a reason', () => {
  assert.equal(toHttpRoute(route({}), exists).route.rules.length, 1);
  const refs = toHttpRoute(rule({ backendRefs: [
    { name: 'gone', port: 80 },
    { kind: 'ServiceImport', group: 'multicluster.x-k8s.io', name: 'server', port: 80 },
    { name: 'server', namespace: 'other', port: 80 },
  ] }), exists).route.rules[0]!.backendRefs;
  assert.match(refs[0]!.invalidReason, /BackendNotFound: Service demo\/gone does not exist/);
  assert.match(refs[1]!.invalidReason, /InvalidKind/);
  assert.match(refs[2]!.invalidReason, /RefNotPermitted/);
});

function invalid(object: KubeObject, field: string, reason: RegExp): void {
  assert.throws(() => toHttpRoute(object, exists), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.object, 'HTTPRoute demo/canary');
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    return true;
  });
}

test('invalid matches are errors naming the field path', () => {
  const m = (...matches: unknown[]) => rule({ matches });
  invalid(m({}, { path: { type: 'PathPrefix', value: 'api' } }), 'spec.rules[0].matches[1].path.value', /starting with "\/"/);
  invalid(m({ path: { value: '/a//b' } }), 'spec.rules[0].matches[0].path.value', /"\/\/"/);
  invalid(m({ path: { value: '/a/../b' } }), 'spec.rules[0].matches[0].path.value', /"\/\.\.\/"/);
  invalid(m({ path: { value: '/a b' } }), 'spec.rules[0].matches[0].path.value', /characters not allowed/);
  invalid(m({ path: { type: 'Glob', value: '/a' } }), 'spec.rules[0].matches[0].path.type', /Exact, PathPrefix, RegularExpression/);
  invalid(m({ path: { type: 'RegularExpression', value: '/(a' } }), 'spec.rules[0].matches[0].path.value', /invalid regular expression/);
  invalid(m({ headers: [{ name: 'bad header', value: 'x' }] }), 'spec.rules[0].matches[0].headers[0].name', /not a valid HTTP header name/);
  invalid(m({ headers: [{ name: 'x-a' }] }), 'spec.rules[0].matches[0].headers[0].value', /required/);
  invalid(m({ queryParams: [{ type: 'Prefix', name: 'q', value: 'x' }] }), 'spec.rules[0].matches[0].queryParams[0].type', /Exact, RegularExpression/);
  invalid(m({ method: 'FETCH' }), 'spec.rules[0].matches[0].method', /GET, HEAD/);
  invalid(m({ hostname: 'x' }), 'spec.rules[0].matches[0].hostname', /unknown field/);
});

test('a regex the linear-time engine cannot run rejects its route, naming the field and the construct', () => {
  const m = (...matches: unknown[]) => rule({ matches });
  const re = (value: string) => ({ type: 'RegularExpression', value });
  invalid(m({ path: re('/(a)\\1') }), 'spec.rules[0].matches[0].path.value', /backreferences .* RE2 has none/);
  invalid(m({ path: re('/(?=a)a') }), 'spec.rules[0].matches[0].path.value', /lookaheads/);
  invalid(m({}, { headers: [{ type: 'RegularExpression', name: 'x-v', value: '(?<!a)b' }] }), 'spec.rules[0].matches[1].headers[0].value', /lookbehinds/);
  invalid(m({ queryParams: [{ type: 'RegularExpression', name: 'q', value: '(?i)abc' }] }), 'spec.rules[0].matches[0].queryParams[0].value', /inline flags/);
  invalid(m({ path: re('/\\pL+') }), 'spec.rules[0].matches[0].path.value', /\\p is not supported/);
  invalid(m({ path: re('/[[:alpha:]]+') }), 'spec.rules[0].matches[0].path.value', /POSIX classes/);
  invalid(m({ path: re('/[0-9]{32}') }), 'spec.rules[0].matches[0].path.value', /linear time/);
  invalid(m({ path: re('/a)|(b') }), 'spec.rules[0].matches[0].path.value', /invalid regular expression/);
  // What RE2 and this engine both read alike is accepted, the pathological-for-backtracking included.
  for (const ok of ['/(a+)+', '/api/v[0-9]+/users/[^/]+', '.*\\.(js|css)', '/(?<id>[0-9a-f]{8}-[0-9a-f]{4})/\\w+', '/a\\.b\\-c\\x2f']) {
    assert.equal(toHttpRoute(m({ path: re(ok) }), exists).route.rules[0]!.matches[0]!.path!.value, ok);
  }
});

test('filters on a backendRef and mirrors compile; a mirror to another namespace needs a grant like any backendRef', () => {
  const { route: r } = toHttpRoute(route({ rules: [{
    filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'server-b', port: 8080 } } }, { type: 'RequestMirror', requestMirror: { backendRef: { name: 'x', namespace: 'far', port: 80 } } }],
    backendRefs: [
      { name: 'server', port: 8080, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-to', value: 'server' }] } }] },
      { name: 'server-b', port: 8080 },
    ],
  }] }), exists);
  const [rl] = r.rules;
  assert.deepEqual(rl!.backendRefs[0]!.filters?.map((x) => x.headerModifier?.set), [[{ name: 'x-to', value: 'server' }]]);
  assert.equal(rl!.backendRefs[1]!.filters, undefined);
  assert.deepEqual(rl!.filters.map((x) => [x.mirror?.name, x.mirror?.invalidReason.split(':')[0]]), [['server-b', ''], ['x', 'RefNotPermitted']]);
});

test('a rule\'s retry compiles (codes, attempts, backoff); hostile ones are refused naming the field', () => {
  const withRetry = (retry: unknown) => rule({ retry });
  assert.deepEqual(toHttpRoute(withRetry({ codes: [500, 503, 500], attempts: 2, backoff: '100ms' }), exists).route.rules[0]!.retry, { codes: [500, 503], attempts: 2, backoffMs: 100 });
  assert.deepEqual(toHttpRoute(withRetry({}), exists).route.rules[0]!.retry, { codes: [], attempts: 1, backoffMs: 0 });
  assert.equal(toHttpRoute(rule({}), exists).route.rules[0]!.retry, undefined, 'no retry: the node\'s settings');
  invalid(withRetry({ codes: [200] }), 'spec.rules[0].retry.codes[0]', /400/);
  invalid(withRetry({ codes: ['503'] }), 'spec.rules[0].retry.codes[0]', /./);
  invalid(withRetry({ codes: Array.from({ length: 33 }, () => 500) }), 'spec.rules[0].retry.codes', /./);
  invalid(withRetry({ attempts: -1 }), 'spec.rules[0].retry.attempts', /./);
  invalid(withRetry({ attempts: 1e9 }), 'spec.rules[0].retry.attempts', /./);
  invalid(withRetry({ backoff: 'soon' }), 'spec.rules[0].retry.backoff', /duration/);
  invalid(withRetry({ backoff: '2h' }), 'spec.rules[0].retry.backoff', /longer than 1m/);
  invalid(withRetry({ perTryTimeout: '1s' }), 'spec.rules[0].retry.perTryTimeout', /unknown field/);
  invalid(withRetry('always'), 'spec.rules[0].retry', /./);
});

test('invalid filters are errors naming the field path', () => {
  const fl = (...filters: unknown[]) => rule({ filters });
  invalid(fl({ type: 'ExtensionRef', extensionRef: {} }), 'spec.rules[0].filters[0].type', /"ExtensionRef" is not supported/);
  invalid(fl({ type: 'RequestMirror', requestMirror: {} }), 'spec.rules[0].filters[0].requestMirror.backendRef', /required/);
  invalid(fl({ type: 'RequestMirror', requestMirror: { backendRef: { name: 'server', port: 8080, weight: 2 } } }), 'spec.rules[0].filters[0].requestMirror.backendRef.weight', /not allowed on a mirror/);
  invalid(fl({ type: 'RequestMirror', requestMirror: { backendRef: { name: 'server', port: 8080 }, fraction: { numerator: 1 } } }), 'spec.rules[0].filters[0].requestMirror.fraction', /every request is mirrored/);
  invalid(rule({ backendRefs: [{ name: 'server', port: 8080, filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }), 'spec.rules[0].backendRefs[0].filters[0].type', /answers before any backend is chosen/);
  invalid(rule({ backendRefs: [{ name: 'server', port: 8080, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { remove: ['bad name'] } }] }] }), 'spec.rules[0].backendRefs[0].filters[0].requestHeaderModifier.remove[0]', /header name/);
  invalid(rule({ backendRefs: [{ name: 'server', port: 8080, filters: 'x' }] }), 'spec.rules[0].backendRefs[0].filters', /./);
  invalid(fl({ type: 'RequestHeaderModifier' }), 'spec.rules[0].filters[0].requestHeaderModifier', /required/);
  invalid(fl({ type: 'RequestHeaderModifier', requestHeaderModifier: {}, urlRewrite: {} }), 'spec.rules[0].filters[0].urlRewrite', /must not be set/);
  invalid(fl({ type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'a', value: '1' }, { name: 'A', value: '2' }] } }), 'spec.rules[0].filters[0].responseHeaderModifier.set[1].name', /listed twice/);
  invalid(route({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/x' } } }] }] }), 'spec.rules[0].filters[0].urlRewrite.path.type', /matches\[0\] is Exact/);
  invalid(fl({ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath' } } }), 'spec.rules[0].filters[0].urlRewrite.path.replaceFullPath', /required/);
  invalid(fl({ type: 'RequestRedirect', requestRedirect: { statusCode: 301 } }), 'spec.rules[0].filters', /must not be used together with backendRefs/);
  invalid(route({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 304 } }] }] }), 'spec.rules[0].filters[0].requestRedirect.statusCode', /301, 302/);
  invalid(route({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'ftp' } }] }] }), 'spec.rules[0].filters[0].requestRedirect.scheme', /http, https/);
  invalid(route({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'URLRewrite', urlRewrite: {} }] }] }), 'spec.rules[0].filters', /cannot be used in the same rule/);
  invalid(fl({ type: 'URLRewrite', urlRewrite: {} }, { type: 'URLRewrite', urlRewrite: {} }), 'spec.rules[0].filters[1].type', /only once/);
});

test('invalid parents, backends and timeouts are errors naming the field path', () => {
  invalid(route({ parentRefs: [{ kind: 'Service', group: '', port: 80 }] }), 'spec.parentRefs[0].name', /required/);
  invalid(route({ parentRefs: [{ ...PARENT, sectionName: 'http' }] }), 'spec.parentRefs[0].sectionName', /not supported/);
  invalid(route({ parentRefs: [{ ...PARENT, port: 0 }] }), 'spec.parentRefs[0].port', /between 1 and 65535/);
  invalid(rule({ backendRefs: [{ name: 'server' }] }), 'spec.rules[0].backendRefs[0].port', /required when the backend is a Service/);
  invalid(rule({ backendRefs: [{ name: 'server', port: 80, weight: -1 }] }), 'spec.rules[0].backendRefs[0].weight', /between 0 and 1000000/);
  invalid(rule({ timeouts: { request: '10 s' } }), 'spec.rules[0].timeouts.request', /not a Gateway API duration/);
  invalid(rule({ timeouts: { request: '1s', backendRequest: '2s' } }), 'spec.rules[0].timeouts.backendRequest', /not be longer than timeouts.request/);
  invalid(rule({ timeouts: { idle: '1s' } }), 'spec.rules[0].timeouts.idle', /unknown field/);
  invalid(route({ hostnames: ['Bad_Host'] }), 'spec.hostnames[0]', /not a valid hostname/);
  invalid(rule({ sessionPersistence: {} }), 'spec.rules[0].sessionPersistence', /not supported/);
});

test('Gateway API durations', () => {
  assert.equal(parseGatewayDuration('10s'), 10_000);
  assert.equal(parseGatewayDuration('500ms'), 500);
  assert.equal(parseGatewayDuration('1h30m'), 5_400_000);
  assert.equal(parseGatewayDuration('1h2m3s4ms'), 3_723_004);
  assert.equal(parseGatewayDuration('0s'), 0);
  for (const bad of ['', '10', '1.5s', '1d', '-1s', '123456s', '1h1h1h1h1h']) assert.equal(parseGatewayDuration(bad), null, bad);
});

test('a creationTimestamp that is not a string is an error: it orders routes on every node', () => {
  invalid({ ...route({}), metadata: { name: 'canary', namespace: 'demo', creationTimestamp: 5 as never } }, 'metadata.creationTimestamp', /must be a string/);
});
