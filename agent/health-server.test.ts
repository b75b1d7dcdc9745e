import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { Registry, Counter } from 'prom-client';
import { Readiness } from './readiness.ts';
import { HealthServer } from './health-server.ts';
import { MetricsServer } from './metrics-server.ts';

test('health: 503 naming pending tasks, then 200 ready', async (t) => {
  const readiness = new Readiness();
  const synced = readiness.register('config synced');
  const issued = readiness.register('certificates issued');
  const health = await HealthServer.listen('127.0.0.1:0', readiness);
  t.after(() => health.close());
  const url = `http://${health.address}/healthz/ready`;
  let res = await fetch(url);
  assert.equal(res.status, 503);
  assert.equal(await res.text(), 'not ready: pending: config synced, certificates issued\n');
  synced();
  issued();
  res = await fetch(url);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ready\n');
  assert.equal((await fetch(`http://${health.address}/other`)).status, 404);
});

test('metrics: serves the registry in Prometheus text format', async (t) => {
  const registry = new Registry();
  new Counter({ name: 'nodemesh_test_total', help: 'test', registers: [registry] }).inc(3);
  const metrics = await MetricsServer.listen('127.0.0.1:0', registry);
  t.after(() => metrics.close());
  const res = await fetch(`http://${metrics.address}/metrics`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /^nodemesh_test_total 3$/m);
});

test('servers: a port in use rejects listen with BindError', async (t) => {
  const squatter = createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  const { port } = squatter.address() as import('node:net').AddressInfo;
  await assert.rejects(HealthServer.listen(`127.0.0.1:${port}`, new Readiness()), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NM_BIND_FAILED');
    assert.match(err.message, new RegExp(`health server: cannot listen on 127.0.0.1:${port}`));
    return true;
  });
  await assert.rejects(MetricsServer.listen('localhost:99999', new Registry()), /not host:port/);
});
