import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { compileRouteRegex, isLinear } from '../../core/route-regex.ts';
import type { HttpRoute, HttpRouteMatch, HttpRouteRule } from '../../core/types.ts';
import { RouteTable, pathPrefixMatches, pickWeighted } from './route-table.ts';
import type { RouteRequest } from './route-table.ts';
import { modifyHeaders, redirectLocation, rewritePath } from './filters.ts';

const SVC = { namespace: 'shop', name: 'cart' };

function m(partial: Partial<HttpRouteMatch> & { path?: HttpRouteMatch['path'] }): HttpRouteMatch {
  return { headers: [], queryParams: [], method: '', ...partial };
}

function rule(name: string, matches: HttpRouteMatch[]): HttpRouteRule {
  // The backend name tells the test which rule matched.
  return { matches, filters: [], backendRefs: [{ namespace: 'shop', name, port: 80, weight: 1, invalidReason: '' }], requestTimeoutMs: 0, backendRequestTimeoutMs: 0 };
}

function route(name: string, rules: HttpRouteRule[], extra: Partial<HttpRoute> = {}): HttpRoute {
  return { namespace: 'shop', name, parents: [{ namespace: 'shop', name: 'cart', port: 0 }], hostnames: [], rules, creationTimestamp: '2025-01-01T00:00:00Z', ...extra };
}

function req(path: string, extra: Partial<Omit<RouteRequest, 'query'>> & { query?: string } = {}): RouteRequest {
  return { method: extra.method ?? 'GET', path, query: new URLSearchParams(extra.query ?? ''), headers: extra.headers ?? {} };
}

function winner(table: RouteTable, r: RouteRequest, clientNamespace = 'shop', port = 80): string {
  const d = table.decide(SVC, port, clientNamespace, r);
  return d.kind === 'matched' ? d.rule.backendRefs[0]!.name : d.kind;
}

const exact = (value: string) => ({ type: 'Exact' as const, value });
const prefix = (value: string) => ({ type: 'PathPrefix' as const, value });
const regex = (value: string) => ({ type: 'RegularExpression' as const, value });

test('path matching: Exact, element-wise PathPrefix, anchored RegularExpression', () => {
  assert.ok(pathPrefixMatches('/foo', '/foo'));
  assert.ok(pathPrefixMatches('/foo', '/foo/'));
  assert.ok(pathPrefixMatches('/foo', '/foo/bar'));
  assert.ok(pathPrefixMatches('/foo/', '/foo'), 'a trailing slash on the prefix is ignored');
  assert.ok(!pathPrefixMatches('/foo', '/foobar'));
  assert.ok(pathPrefixMatches('/', '/anything'));
  const table = new RouteTable([route('r', [rule('exact', [m({ path: exact('/a') })]), rule('re', [m({ path: regex('/v[0-9]+') })])])]);
  assert.equal(winner(table, req('/a')), 'exact');
  assert.equal(winner(table, req('/a/')), 'no-match', 'Exact is exact');
  assert.equal(winner(table, req('/v12')), 're');
  assert.equal(winner(table, req('/v12/x')), 'no-match', 'regular expressions match the whole path');
});

test('headers (case-insensitive names, exact or regex values), query params (first value), method', () => {
  const table = new RouteTable([route('r', [
    rule('hdr', [m({ path: prefix('/'), headers: [{ type: 'Exact', name: 'x-canary', value: 'Yes' }] })]),
    rule('hre', [m({ path: prefix('/'), headers: [{ type: 'RegularExpression', name: 'x-version', value: 'v[12]' }] })]),
    rule('qp', [m({ path: prefix('/'), queryParams: [{ type: 'Exact', name: 'debug', value: '1' }] })]),
    rule('post', [m({ path: prefix('/'), method: 'POST' })]),
  ])]);
  assert.equal(winner(table, req('/x', { headers: { 'x-canary': 'Yes' } })), 'hdr');
  assert.equal(winner(table, req('/x', { headers: { 'x-canary': 'yes' } })), 'no-match', 'values are case-sensitive');
  assert.equal(winner(table, req('/x', { headers: { 'x-version': 'v2' } })), 'hre');
  assert.equal(winner(table, req('/x', { headers: { 'x-version': 'v22' } })), 'no-match');
  assert.equal(winner(table, req('/x', { query: 'debug=1&debug=2' })), 'qp');
  assert.equal(winner(table, req('/x', { query: 'debug=2&debug=1' })), 'no-match', 'only the first value counts');
  assert.equal(winner(table, req('/x', { method: 'POST' })), 'post');
  assert.equal(winner(table, req('/x', { method: 'PUT' })), 'no-match');
});

test('precedence: Exact > longest prefix > regex > method > most headers > most query params', () => {
  const table = new RouteTable([route('r', [
    rule('query', [m({ path: prefix('/api'), queryParams: [{ type: 'Exact', name: 'a', value: '1' }] })]),
    rule('headers2', [m({ path: prefix('/api'), headers: [{ type: 'Exact', name: 'a', value: '1' }, { type: 'Exact', name: 'b', value: '1' }] })]),
    rule('headers1', [m({ path: prefix('/api'), headers: [{ type: 'Exact', name: 'a', value: '1' }], queryParams: [{ type: 'Exact', name: 'a', value: '1' }, { type: 'Exact', name: 'b', value: '1' }] })]),
    rule('method', [m({ path: prefix('/api'), method: 'GET' })]),
    rule('regex', [m({ path: regex('/api/.*') })]),
    rule('short', [m({ path: prefix('/') })]),
    rule('long', [m({ path: prefix('/api/v1') })]),
    rule('exact', [m({ path: exact('/api/v1/x') })]),
  ])]);
  assert.equal(winner(table, req('/api/v1/x')), 'exact');
  assert.equal(winner(table, req('/api/v1/y')), 'long', 'longest prefix beats regex and shorter prefixes');
  assert.equal(winner(table, req('/api/z', { method: 'GET' })), 'method', 'equal prefixes: a method match wins');
  assert.equal(winner(table, req('/api/z', { method: 'PUT', headers: { a: '1', b: '1' }, query: 'a=1&b=1' })), 'headers2', 'then more headers');
  assert.equal(winner(table, req('/api/z', { method: 'PUT', headers: { a: '1' }, query: 'a=1&b=1' })), 'headers1', 'then more query params');
  assert.equal(winner(table, req('/api/z', { method: 'PUT', query: 'a=1' })), 'query');
  assert.equal(winner(table, req('/apix', { method: 'PUT' })), 'short', 'a prefix never matches inside a segment');
});

test('ties: the oldest route wins, then namespace/name, then rule order', () => {
  const older = route('zz-older', [rule('older', [m({ path: prefix('/') })])], { creationTimestamp: '2024-01-01T00:00:00Z' });
  const newer = route('aa-newer', [rule('newer', [m({ path: prefix('/') })])], { creationTimestamp: '2025-06-01T00:00:00Z' });
  assert.equal(winner(new RouteTable([newer, older]), req('/')), 'older');
  const b = route('b', [rule('b', [m({ path: prefix('/') })])]);
  const a = route('a', [rule('a1', [m({ path: prefix('/') })]), rule('a2', [m({ path: prefix('/') })])]);
  assert.equal(winner(new RouteTable([b, a]), req('/')), 'a1');
});

test('parents: the Service port selects routes; no route means unrouted, not 404', () => {
  const onPort = route('p', [rule('p8080', [m({ path: prefix('/') })])], { parents: [{ namespace: 'shop', name: 'cart', port: 8080 }] });
  const table = new RouteTable([onPort]);
  assert.equal(winner(table, req('/'), 'shop', 8080), 'p8080');
  assert.equal(winner(table, req('/'), 'shop', 80), 'unrouted');
  assert.equal(table.decide({ namespace: 'shop', name: 'other' }, 80, 'shop', req('/')).kind, 'unrouted');
  assert.ok(table.hasRoutes(SVC));
  assert.ok(!table.hasRoutes({ namespace: 'shop', name: 'other' }));
});

test('GAMMA: consumer routes apply to their namespace only and replace producer routes there', () => {
  const producer = route('producer', [rule('producer', [m({ path: prefix('/') })])]);
  const consumer = route('consumer', [rule('consumer', [m({ path: prefix('/only') })])], { namespace: 'web', parents: [{ namespace: 'shop', name: 'cart', port: 0 }] });
  const table = new RouteTable([producer, consumer]);
  assert.equal(winner(table, req('/only'), 'web'), 'consumer');
  assert.equal(winner(table, req('/other'), 'web'), 'no-match', 'the producer route does not apply to web clients');
  assert.equal(winner(table, req('/only'), 'shop'), 'producer');
  assert.equal(winner(table, req('/only'), 'mobile'), 'producer', 'another namespace gets the producer route');
  const third = new RouteTable([route('stray', [rule('stray', [m({ path: prefix('/') })])], { namespace: 'mobile', parents: [{ namespace: 'shop', name: 'cart', port: 0 }] })]);
  assert.equal(winner(third, req('/'), 'web'), 'unrouted', 'a consumer route of another namespace applies to nobody else');
});

test('pickWeighted follows the weights and never picks weight 0', () => {
  let seed = 1;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  const counts = [0, 0, 0];
  for (let i = 0; i < 10_000; i++) counts[pickWeighted([90, 10, 0], random)]!++;
  assert.ok(Math.abs(counts[0]! - 9000) < 300, String(counts));
  assert.equal(counts[2], 0);
  assert.equal(pickWeighted([0, 0]), -1);
  assert.equal(pickWeighted([]), -1);
});

test('filters: header modifiers, path rewrites and redirect locations', () => {
  const headers: Record<string, string | string[] | undefined> = { 'x-a': '1', 'x-remove': 'gone', 'x-list': ['a', 'b'] };
  modifyHeaders(headers, { set: [{ name: 'X-A', value: 'set' }, { name: 'x-new', value: 'n' }], add: [{ name: 'x-list', value: 'c' }, { name: 'x-fresh', value: 'f' }], remove: ['X-Remove'] });
  assert.deepEqual(headers, { 'x-a': 'set', 'x-new': 'n', 'x-list': 'a,b,c', 'x-fresh': 'f' });

  const pm = m({ path: prefix('/old/') });
  assert.equal(rewritePath('/old/a/b', { type: 'ReplacePrefixMatch', value: '/new' }, pm), '/new/a/b');
  assert.equal(rewritePath('/old', { type: 'ReplacePrefixMatch', value: '/new' }, pm), '/new');
  assert.equal(rewritePath('/old/a', { type: 'ReplacePrefixMatch', value: '/' }, pm), '/a');
  assert.equal(rewritePath('/old/a', { type: 'ReplaceFullPath', value: '/full' }, pm), '/full');
  assert.equal(rewritePath('/a/b', { type: 'ReplacePrefixMatch', value: '/x' }, m({ path: prefix('/') })), '/x/a/b');

  const base = { scheme: 'http', host: 'cart.shop', port: 80, path: '/old/a', search: '?q=1' };
  const f = (extra: object) => ({ type: 'RequestRedirect' as const, scheme: '', hostname: '', port: 0, statusCode: 302, ...extra });
  assert.equal(redirectLocation(f({}), base, pm), 'http://cart.shop/old/a?q=1');
  assert.equal(redirectLocation(f({ scheme: 'https' }), { ...base, host: 'cart.shop:8080' }, pm), 'https://cart.shop/old/a?q=1', 'a scheme change drops the request port');
  assert.equal(redirectLocation(f({ hostname: 'x.example' }), { ...base, host: 'cart.shop:8080' }, pm), 'http://x.example:8080/old/a?q=1', 'the request port is kept');
  assert.equal(redirectLocation(f({ port: 8443, scheme: 'https' }), base, pm), 'https://cart.shop:8443/old/a?q=1');
  assert.equal(redirectLocation(f({ path: { type: 'ReplacePrefixMatch', value: '/new' } }), base, pm), 'http://cart.shop/new/a?q=1');
});

/**
 * Runs `RouteTable.decide` for a path in a worker; a backtracking engine would
 * hold that worker's thread for longer than the universe has, so a hard
 * deadline terminates it and the test fails instead of hanging.
 */
async function decideInWorker(routes: HttpRoute[], path: string): Promise<string> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.url).then(({ RouteTable }) => {
      const d = new RouteTable(workerData.routes).decide({ namespace: 'shop', name: 'cart' }, 80, 'shop', { method: 'GET', path: workerData.path, query: new URLSearchParams(), headers: {} });
      parentPort.postMessage(d.kind === 'matched' ? d.rule.backendRefs[0].name : d.kind);
    });`;
  const worker = new Worker(code, { eval: true, workerData: { url: new URL('./route-table.ts', import.meta.url).href, routes, path } });
  try {
    return await new Promise<string>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('the match did not finish within 30 s: route regexes backtrack again')), 30_000);
      worker.once('message', (m: string) => { clearTimeout(deadline); resolve(m); });
      worker.once('error', (e) => { clearTimeout(deadline); reject(e); });
    });
  } finally {
    await worker.terminate();
  }
}

test('route regexes run on the linear-time engine: a 10 KiB path against /(a+)+ is answered, not backtracked', async () => {
  assert.ok(isLinear(compileRouteRegex('/(a+)+')), 'compiled with the linear-time engine');
  const routes = [route('re', [rule('re', [m({ path: regex('/(a+)+') })])])];
  const a = 'a'.repeat(10 * 1024);
  assert.equal(await decideInWorker(routes, `/${a}!`), 'no-match', 'the worst case for backtracking, 10 KiB of it');
  assert.equal(await decideInWorker(routes, `/${a}`), 're');
});

test('a GRPCRoute on the node: the exact method outranks the service prefix and a regex; no match is flagged for a gRPC answer', () => {
  const grpcRule = (name: string, path: HttpRouteMatch['path']) => rule(name, [m({ path })]);
  const table = new RouteTable([route('rpc', [
    grpcRule('by-method', exact('/pkg.Svc/Get')),
    grpcRule('by-service', prefix('/pkg.Svc')),
    grpcRule('by-regex', regex('/[^/]+/List.*')),
  ], { kind: 'GRPCRoute' })]);
  assert.equal(winner(table, req('/pkg.Svc/Get', { method: 'POST' })), 'by-method');
  assert.equal(winner(table, req('/pkg.Svc/Put', { method: 'POST' })), 'by-service');
  assert.equal(winner(table, req('/other.Svc/ListAll', { method: 'POST' })), 'by-regex');
  const miss = table.decide(SVC, 80, 'shop', req('/pkg.SvcX/Get', { method: 'POST' }));
  assert.deepEqual(miss, { kind: 'no-match', grpc: true }, 'a service prefix is a whole path element, and the answer is a gRPC one');
  const httpMiss = new RouteTable([route('web', [rule('x', [m({ path: exact('/x') })])])]).decide(SVC, 80, 'shop', req('/y'));
  assert.deepEqual(httpMiss, { kind: 'no-match', grpc: false });
});
