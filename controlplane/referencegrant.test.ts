import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { grantsRouteToService, toReferenceGrant } from './referencegrant.ts';
import { MeshModel } from './mesh-model.ts';
import type { KubeObject } from './source.ts';
import { InvalidObjectError } from '../core/errors.ts';
import type { Resource } from '../core/types.ts';

const ORIGIN = 'test.yaml';

function grant(spec: unknown, namespace = 'shop'): KubeObject {
  return { apiVersion: 'gateway.networking.k8s.io/v1beta1', kind: 'ReferenceGrant', metadata: { name: 'front-to-shop', namespace }, spec } as KubeObject;
}

const FROM_FRONT = { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'front' };

function rejects(obj: KubeObject, field: string, reason: RegExp): void {
  assert.throws(() => toReferenceGrant(obj), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    return true;
  });
}

test('a ReferenceGrant lets routes of the kind and namespace it names send to the Services it names, nothing else', () => {
  const named = toReferenceGrant(grant({ from: [FROM_FRONT], to: [{ group: '', kind: 'Service', name: 'web-v2' }] }));
  const all = toReferenceGrant(grant({ from: [{ ...FROM_FRONT, kind: 'GRPCRoute' }], to: [{ group: '', kind: 'Service' }] }));
  assert.ok(grantsRouteToService([named], 'HTTPRoute', 'front', 'shop', 'web-v2'));
  assert.ok(!grantsRouteToService([named], 'HTTPRoute', 'front', 'shop', 'web'), 'another Service');
  assert.ok(!grantsRouteToService([named], 'GRPCRoute', 'front', 'shop', 'web-v2'), 'another route kind');
  assert.ok(!grantsRouteToService([named], 'HTTPRoute', 'other', 'shop', 'web-v2'), 'another namespace of routes');
  assert.ok(!grantsRouteToService([named], 'HTTPRoute', 'front', 'elsewhere', 'web-v2'), 'a grant speaks only for its own namespace');
  assert.ok(grantsRouteToService([all], 'GRPCRoute', 'front', 'shop', 'anything'), 'no name: every Service');
  const gateways = toReferenceGrant(grant({ from: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', namespace: 'front' }], to: [{ group: '', kind: 'Secret' }] }));
  assert.ok(!grantsRouteToService([gateways], 'HTTPRoute', 'front', 'shop', 'web'), 'valid, but grants routes nothing');
});

test('hostile ReferenceGrants are rejected alone, naming the field', () => {
  rejects(grant(undefined), 'spec', /required/);
  rejects(grant({ from: [], to: [{ group: '', kind: 'Service' }] }), 'spec.from', /at least one/);
  rejects(grant({ from: [FROM_FRONT], to: [] }), 'spec.to', /at least one/);
  rejects(grant({ from: [{ kind: 'HTTPRoute', namespace: 'front' }], to: [{ group: '', kind: 'Service' }] }), 'spec.from[0].group', /required/);
  rejects(grant({ from: [{ ...FROM_FRONT, namespace: 'Not_A_Label' }], to: [{ group: '', kind: 'Service' }] }), 'spec.from[0].namespace', /Kubernetes name/);
  rejects(grant({ from: [{ ...FROM_FRONT, group: 'UPPER/slash' }], to: [{ group: '', kind: 'Service' }] }), 'spec.from[0].group', /API group/);
  rejects(grant({ from: [{ ...FROM_FRONT, kind: '1bad kind' }], to: [{ group: '', kind: 'Service' }] }), 'spec.from[0].kind', /kind/);
  rejects(grant({ from: [FROM_FRONT], to: [{ group: '', kind: 'Service', name: '../web' }] }), 'spec.to[0].name', /Kubernetes name/);
  rejects(grant({ from: [FROM_FRONT], to: [{ group: '', kind: 'Service', namespace: 'x' }] }), 'spec.to[0].namespace', /unknown field/);
  rejects(grant({ from: Array.from({ length: 17 }, () => FROM_FRONT), to: [{ group: '', kind: 'Service' }] }), 'spec.from', /./);
  rejects(grant({ from: 'front', to: [{ group: '', kind: 'Service' }] }), 'spec.from', /./);
});

test('a ReferenceGrant allows a cross-namespace backendRef when it appears, and its deletion makes it RefNotPermitted again', async () => {
  const model = new MeshModel();
  const svc = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { clusterIP: name === 'web' ? '10.96.0.10' : '10.96.0.11', ports: [{ port: 80 }] } });
  model.upsert(svc('web'), ORIGIN);
  model.upsert(svc('web-v2'), ORIGIN);
  model.upsert({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'consumer', namespace: 'front' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', namespace: 'shop' }], rules: [{ backendRefs: [{ name: 'web', namespace: 'shop', port: 80 }, { name: 'web-v2', namespace: 'shop', port: 80 }] }] },
  }, ORIGIN);
  model.synced();
  await model.whenSynced();
  const reasons = () => (model.resources().find((r) => r.kind === 'route' && r.key === 'front/consumer') as Extract<Resource, { kind: 'route' }>).route.rules[0]!.backendRefs.map((b) => b.invalidReason.split(':')[0]);
  assert.deepEqual(reasons(), ['', 'RefNotPermitted'], 'its own parent needs no grant (GAMMA); another Service does');
  model.upsert(grant({ from: [FROM_FRONT], to: [{ group: '', kind: 'Service', name: 'web-v2' }] }), ORIGIN);
  await tick();
  assert.deepEqual(reasons(), ['', '']);
  model.remove('ReferenceGrant', 'shop', 'front-to-shop');
  await tick();
  assert.deepEqual(reasons(), ['', 'RefNotPermitted']);
});
