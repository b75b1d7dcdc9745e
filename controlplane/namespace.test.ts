import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toNamespace, defaultNamespace } from './namespace.ts';
import { InvalidObjectError } from '../core/errors.ts';

const ns = (annotations?: Record<string, unknown>) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo', annotations: annotations as Record<string, string> } });

test('namespace annotations set enrollment and mTLS mode', () => {
  assert.deepEqual(toNamespace(ns()), { name: 'demo', enrolled: false, mtlsMode: 'permissive' });
  assert.deepEqual(toNamespace(ns({ 'nodemesh.io/mesh': 'enabled', 'nodemesh.io/mtls-mode': 'strict' })), { name: 'demo', enrolled: true, mtlsMode: 'strict' });
  assert.deepEqual(toNamespace(ns({ 'nodemesh.io/mesh': 'disabled' })), { name: 'demo', enrolled: false, mtlsMode: 'permissive' });
  assert.deepEqual(defaultNamespace('x'), { name: 'x', enrolled: false, mtlsMode: 'permissive' });
});

test('bad namespace annotation values are errors naming the annotation', () => {
  assert.throws(() => toNamespace(ns({ 'nodemesh.io/mesh': 'yes' })), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError);
    assert.equal(err.object, 'Namespace demo');
    assert.equal(err.field, 'metadata.annotations["nodemesh.io/mesh"]');
    assert.match(err.message, /must be one of enabled, disabled, got "yes"/);
    return true;
  });
  assert.throws(() => toNamespace(ns({ 'nodemesh.io/mtls-mode': 'STRICT' })), /metadata\.annotations\["nodemesh\.io\/mtls-mode"\]: must be one of strict, permissive/);
  assert.throws(() => toNamespace(ns({ 'nodemesh.io/mesh': true })), /metadata\.annotations\["nodemesh\.io\/mesh"\]: must be a string, got boolean true/);
});

test('a Namespace whose name is not a DNS label is an error naming metadata.name', () => {
  assert.throws(() => toNamespace({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod/sa/admin' } }), /Namespace prod\/sa\/admin: metadata\.name: not a valid Kubernetes name/);
  assert.throws(() => toNamespace({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo', annotations: 'x' as never } }), /metadata\.annotations: must be an object, got string "x"/);
});
