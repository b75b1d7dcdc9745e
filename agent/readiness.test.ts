import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readiness } from './readiness.ts';

test('readiness: ready only after every registered task is done', () => {
  const readiness = new Readiness();
  assert.equal(readiness.ready(), true);
  const configSynced = readiness.register('config synced');
  const certsIssued = readiness.register('certificates issued');
  assert.equal(readiness.ready(), false);
  assert.deepEqual(readiness.pending(), ['config synced', 'certificates issued']);
  configSynced();
  assert.deepEqual(readiness.pending(), ['certificates issued']);
  certsIssued();
  certsIssued();
  assert.equal(readiness.ready(), true);
  assert.deepEqual(readiness.pending(), []);
});

test('readiness: onReady runs once, when the last task is done', () => {
  const readiness = new Readiness();
  const configSynced = readiness.register('config synced');
  const certsIssued = readiness.register('certificates issued');
  let calls = 0;
  readiness.onReady(() => calls++);
  configSynced();
  assert.equal(calls, 0);
  certsIssued();
  certsIssued();
  configSynced();
  assert.equal(calls, 1);
});
