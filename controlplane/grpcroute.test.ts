import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toGrpcRoute } from './grpcroute.ts';
import type { KubeObject } from './source.ts';
import { InvalidObjectError } from '../core/errors.ts';

const SERVICES = new Set(['demo/greeter', 'demo/greeter-a', 'demo/greeter-b', 'other/greeter']);
const exists = (ns: string, name: string) => SERVICES.has(`${ns}/${name}`);
const PARENT = { group: '', kind: 'Service', name: 'greeter', port: 50051 };

function route(spec: Record<string, unknown>): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute',
    metadata: { name: 'split', namespace: 'demo', creationTimestamp: '2025-01-01T00:00:00Z' },
    spec: { parentRefs: [PARENT], ...spec },
  };
}

const withMatch = (method: unknown, extra: Record<string, unknown> = {}) => route({ rules: [{ matches: [{ method, ...extra }], backendRefs: [{ name: 'greeter', port: 50051 }] }] });

function rejects(obj: KubeObject, field: string, reason: RegExp): void {
  assert.throws(() => toGrpcRoute(obj, exists), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    return true;
  });
}

test('a GRPCRoute compiles to a route of kind GRPCRoute: method matches as paths, weights, header filters on the rule and on a backendRef', () => {
  const { route: r } = toGrpcRoute(route({
    rules: [
      {
        matches: [{ method: { service: 'nodemesh.test.Greeter', method: 'SayHello' }, headers: [{ name: 'X-Tier', value: 'gold' }] }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-env', value: 'mesh' }], add: [{ name: 'x-hop', value: '1' }], remove: ['x-debug'] } }],
        backendRefs: [
          { name: 'greeter-a', port: 50051, weight: 70, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-backend', value: 'a' }] } }] },
          { name: 'greeter-b', port: 50051, weight: 30 },
        ],
      },
      { matches: [{ method: { service: 'nodemesh.test.Greeter' } }, { method: { method: 'CountTo' } }, { method: { type: 'RegularExpression', service: 'nodemesh\\..*', method: 'Say.*' } }], backendRefs: [{ name: 'greeter', port: 50051 }] },
    ],
  }), exists);
  assert.equal(r.kind, 'GRPCRoute');
  const [first, second] = r.rules;
  assert.deepEqual(first!.matches[0]!.path, { type: 'Exact', value: '/nodemesh.test.Greeter/SayHello' });
  assert.deepEqual(first!.matches[0]!.headers, [{ type: 'Exact', name: 'x-tier', value: 'gold' }]);
  assert.deepEqual(first!.backendRefs.map((b) => [b.name, b.weight, b.filters?.length]), [['greeter-a', 70, 1], ['greeter-b', 30, undefined]]);
  assert.deepEqual(second!.matches.map((m) => m.path), [
    { type: 'PathPrefix', value: '/nodemesh.test.Greeter' },
    { type: 'RegularExpression', value: '/[^/]+/CountTo' },
    { type: 'RegularExpression', value: '/(?:nodemesh\\..*)/(?:Say.*)' },
  ]);
});

test('a consumer GRPCRoute may send to its own parent Service in another namespace; other cross-namespace backends need a ReferenceGrant', () => {
  const consumer = (backend: string) => ({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'c', namespace: 'demo' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'greeter', namespace: 'other', port: 50051 }], rules: [{ backendRefs: [{ name: backend, namespace: 'other', port: 50051 }] }] },
  });
  assert.equal(toGrpcRoute(consumer('greeter'), exists).route.rules[0]!.backendRefs[0]!.invalidReason, '');
  assert.match(toGrpcRoute(consumer('greeter-x'), () => true).route.rules[0]!.backendRefs[0]!.invalidReason, /^RefNotPermitted: .*no ReferenceGrant in other allows GRPCRoutes of demo/);
  const granted = toGrpcRoute(consumer('greeter-x'), () => true, (kind, from, to, name) => kind === 'GRPCRoute' && from === 'demo' && to === 'other' && name === 'greeter-x');
  assert.equal(granted.route.rules[0]!.backendRefs[0]!.invalidReason, '');
});

test('hostile GRPCRoutes are rejected alone, naming the field', () => {
  rejects(withMatch({}), 'spec.rules[0].matches[0].method', /one or both of service and method/);
  rejects(withMatch({ service: 'a/b', method: 'X' }), 'spec.rules[0].matches[0].method.service', /not a gRPC service name/);
  rejects(withMatch({ service: 'pkg.Svc', method: 'Get/../x' }), 'spec.rules[0].matches[0].method.method', /not a gRPC method name/);
  rejects(withMatch({ type: 'Prefix', service: 'pkg.Svc' }), 'spec.rules[0].matches[0].method.type', /Exact|RegularExpression/);
  rejects(withMatch({ type: 'RegularExpression', service: '(a+)+\\1' }), 'spec.rules[0].matches[0].method.service', /./);
  rejects(withMatch({ type: 'RegularExpression', method: '(?<=x)y' }), 'spec.rules[0].matches[0].method.method', /./);
  // A balanced-looking escape out of the group is a syntax error of the part alone.
  rejects(withMatch({ type: 'RegularExpression', service: 'a)|(.*' }), 'spec.rules[0].matches[0].method.service', /./);
  rejects(withMatch({ service: 'x'.repeat(1025) }), 'spec.rules[0].matches[0].method.service', /1024/);
  rejects(withMatch({ service: 'pkg.Svc', extra: 1 }), 'spec.rules[0].matches[0].method.extra', /./);
  rejects(withMatch(undefined, { path: { value: '/x' } }), 'spec.rules[0].matches[0].path', /./);
  rejects(withMatch({ service: 'pkg.Svc' }, { headers: [{ name: 'bad header', value: 'x' }] }), 'spec.rules[0].matches[0].headers[0].name', /header name/);
  rejects(route({ rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {} }] }] }), 'spec.rules[0].filters[0].type', /not supported by nodemesh here; supported: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror/);
  rejects(route({ rules: [{ backendRefs: [{ name: 'greeter', port: 50051, filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }] }), 'spec.rules[0].backendRefs[0].filters[0].type', /not supported/);
  rejects(route({ rules: [{ timeouts: { request: '1s' } }] }), 'spec.rules[0].timeouts', /./);
  rejects(route({ rules: [{ backendRefs: [{ name: 'greeter' }] }] }), 'spec.rules[0].backendRefs[0].port', /required/);
  rejects(route({ rules: [{ backendRefs: [{ name: 'greeter', port: 50051, weight: -1 }] }] }), 'spec.rules[0].backendRefs[0].weight', /./);
  rejects(route({ rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'greeter', port: 50051 }, percent: 50 } }] }] }), 'spec.rules[0].filters[0].requestMirror.percent', /every request is mirrored/);
  rejects(route({ rules: Array.from({ length: 17 }, () => ({})) }), 'spec.rules', /./);
  rejects({ ...route({}), spec: 'not an object' }, 'spec', /./);
});
