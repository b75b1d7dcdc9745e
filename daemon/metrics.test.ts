import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import type { Workload } from '../core/types.ts';
import { setLevel } from '../core/log.ts';
import { ConfigStore } from './config-store.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { createMetrics, liveEnds, REQUEST_LABELS } from './metrics.ts';
import type { DaemonMetrics } from './metrics.ts';
import { connectionRequestLabels, requestLabels } from './l7/request-metrics.ts';
import { applyConfig, spiffe, workload } from './testdata/mesh-fixture.ts';

const GRACE_MS = 60_000;
// Every connection logs its open and close.
setLevel('warn');

/** Distinct (metric, label set) pairs of the data-plane metrics, a histogram's buckets counted once. */
async function seriesCount(registry: Registry): Promise<number> {
  const sets = new Set<string>();
  for (const metric of await registry.getMetricsAsJSON()) {
    for (const v of metric.values) {
      const { le: _le, ...labels } = v.labels;
      sets.add(`${metric.name}${JSON.stringify(labels)}`);
    }
  }
  return sets.size;
}

test('the series of workloads that left are dropped after the grace period: 40 identities through one pod IP come back to the baseline', async (t) => {
  const registry = new Registry();
  const metrics = createMetrics(registry, { seriesGraceMs: GRACE_MS });
  const config = new ConfigStore('n1');
  const tracker = new ConnectionTracker(metrics);
  const client = workload('frontend', '10.0.0.2', 'n2');
  // One pod IP, a new pod with a new identity each time (a StatefulSet recreated, a Job per run).
  const server = (i: number): Workload => ({ ...workload(`job-${i}`, '10.0.0.9', 'n1'), serviceAccount: `sa-${i}` });
  const live = () => liveEnds(config.workloads(), (w) => config.identityOf(w));

  /** One connection and one request from the client to `w`, and one refusal; `keepOpen` leaves the connection open. */
  const traffic = (w: Workload, keepOpen = false) => {
    const report = {
      reporter: 'destination' as const, sourceWorkload: client, sourcePrincipal: spiffe(client), destinationWorkload: w,
      destinationPrincipal: spiffe(w), security: 'mutual_tls' as const,
    };
    const conn = tracker.open({
      ...report, listener: 'inbound', sourceIp: client.ip, destinationIp: w.ip, destinationPort: 8080,
      bytes: () => ({ received: 10, sent: 20 }), destroy: () => {},
    });
    const labels = requestLabels({ ...report, responseCode: 200 });
    metrics.requests.inc(labels);
    metrics.requestDuration.observe(labels, 0.01);
    metrics.tcpDenied.inc({ reporter: 'destination', destination_workload: w.workloadName, destination_workload_namespace: w.namespace, source_principal: spiffe(client), reason: 'policy' });
    if (!keepOpen) conn.finish();
    return conn;
  };

  let now = 0;
  applyConfig(config, { workloads: [client, server(0)] }, 1);
  traffic(server(0));
  const baseline = await seriesCount(registry);
  let heldOpen;
  for (let i = 1; i < 40; i++) {
    applyConfig(config, { workloads: [client, server(i)] }, i + 1);
    if (i === 7) heldOpen = traffic(server(i), true);
    else traffic(server(i));
    now += 1_000;
    assert.equal(await tracker.dropDepartedSeries(live(), now), 0, 'nothing goes before the grace period');
  }
  const grown = await seriesCount(registry);
  assert.ok(grown >= baseline * 39, `${baseline} series grew to ${grown}`);

  now += GRACE_MS;
  await tracker.dropDepartedSeries(live(), now);
  // The current pod's series, and the one a still-open connection uses (its open count, no close yet).
  const withOpen = await seriesCount(registry);
  assert.ok(withOpen > baseline && withOpen < 2 * baseline, `${withOpen} series with one connection held open (baseline ${baseline})`);
  const text = await registry.metrics();
  assert.match(text, /destination_principal="spiffe:\/\/cluster.local\/ns\/shop\/sa\/sa-7"/, 'kept while a connection uses it');
  for (let i = 0; i < 39; i++) if (i !== 7) assert.ok(!text.includes(`/sa/sa-${i}"`), `sa-${i} departed: its series are gone`);

  heldOpen!.finish();
  await tracker.dropDepartedSeries(live(), now + 1);
  assert.equal(await seriesCount(registry), baseline, `back to the ${baseline} series of the pod there now (from ${grown})`);
  t.diagnostic(`series: ${baseline} with one identity, ${grown} after 40, ${withOpen} past the grace period with one connection open, ${baseline} once it closed`);
  assert.ok(metrics.series.size < 40, `the index holds only live label sets (${metrics.series.size})`);
});

test('a workload back in the config before the grace period ends keeps its series', async () => {
  const registry = new Registry();
  const metrics = createMetrics(registry, { seriesGraceMs: GRACE_MS });
  const config = new ConfigStore('n1');
  const tracker = new ConnectionTracker(metrics);
  const a = workload('a', '10.0.0.3', 'n1');
  const b = workload('b', '10.0.0.4', 'n1');
  applyConfig(config, { workloads: [a, b] }, 1);
  const conn = tracker.open({
    listener: 'inbound', reporter: 'destination', sourceIp: a.ip, sourceWorkload: a, sourcePrincipal: spiffe(a), destinationIp: b.ip, destinationPort: 80,
    destinationWorkload: b, destinationPrincipal: spiffe(b), security: 'mutual_tls', bytes: () => ({ received: 1, sent: 1 }), destroy: () => {},
  });
  conn.finish();
  const before = await seriesCount(registry);
  const live = () => liveEnds(config.workloads(), (w) => config.identityOf(w));
  applyConfig(config, { workloads: [a] }, 2);
  await tracker.dropDepartedSeries(live(), 0);
  applyConfig(config, { workloads: [a, b] }, 3);
  await tracker.dropDepartedSeries(live(), GRACE_MS / 2);
  await tracker.dropDepartedSeries(live(), 2 * GRACE_MS);
  assert.equal(await seriesCount(registry), before);
});

test('regression: a label set reused across a connection\'s requests counts each one, and is indexed again once its series were dropped', async () => {
  const registry = new Registry();
  const metrics = createMetrics(registry, { seriesGraceMs: GRACE_MS });
  const config = new ConfigStore('n1');
  const tracker = new ConnectionTracker(metrics);
  const client = workload('frontend', '10.0.0.2', 'n2');
  const server = workload('cart', '10.0.0.9', 'n1');
  applyConfig(config, { workloads: [client, server] }, 1);
  const connection = {};
  const report = (responseCode: number, destinationWorkload = server) => ({
    reporter: 'source' as const, sourceWorkload: client, sourcePrincipal: spiffe(client), destinationWorkload,
    destinationPrincipal: spiffe(destinationWorkload), security: 'mutual_tls' as const, responseCode,
  });
  const ok = connectionRequestLabels(connection, report(200));
  assert.equal(connectionRequestLabels(connection, report(200)), ok, 'the same ends and code: the same label set');
  assert.notEqual(connectionRequestLabels(connection, report(503)), ok);
  assert.deepEqual(connectionRequestLabels(connection, report(200)), requestLabels(report(200)));
  const count = async () => (await registry.getSingleMetricAsString('nodemesh_requests_total')).match(/response_code="200"\} (\d+)/)?.[1];
  for (let i = 0; i < 3; i++) metrics.requests.inc(connectionRequestLabels(connection, report(200)));
  assert.equal(await count(), '3');

  // The server leaves; past the grace period its series go, and the connection's cached label set with them.
  applyConfig(config, { workloads: [client] }, 2);
  const live = () => liveEnds(config.workloads(), (w) => config.identityOf(w));
  await tracker.dropDepartedSeries(live(), 0);
  assert.ok(await tracker.dropDepartedSeries(live(), GRACE_MS) > 0);
  assert.equal(await count(), undefined);
  assert.equal(metrics.series.size, 0);
  metrics.requests.inc(connectionRequestLabels(connection, report(200)));
  assert.equal(await count(), '1');
  assert.ok(metrics.series.size > 0, 'noted again: a later sweep can drop it');
  assert.equal(await tracker.dropDepartedSeries(live(), 2 * GRACE_MS), 0, 'seen gone again: a new grace period');
  assert.ok(await tracker.dropDepartedSeries(live(), 3 * GRACE_MS) > 0);
  assert.equal(await count(), undefined);
});

test('a reused label set\'s increments, updated in place, export what prom-client\'s own inc and observe give; after remove and reset too', async () => {
  // Guards the prom-client internals the in-place update relies on: an upgrade that changes them fails here.
  const ours = createMetrics(new Registry());
  const plainRegistry = new Registry();
  const plain = {
    requests: new Counter({ name: 'nodemesh_requests_total', help: 'h', labelNames: REQUEST_LABELS, registers: [plainRegistry] }),
    requestDuration: new Histogram({
      name: 'nodemesh_request_duration_seconds', help: 'h', labelNames: REQUEST_LABELS, registers: [plainRegistry],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    }),
  };
  const client = workload('frontend', '10.0.0.2', 'n2');
  const labels = requestLabels({ reporter: 'source', sourceWorkload: client, sourcePrincipal: spiffe(client), destinationPrincipal: null, security: 'none', responseCode: 200 });
  const other = { ...labels, response_code: '503' };
  const both = (f: (m: Pick<DaemonMetrics, 'requests' | 'requestDuration'>) => void) => [ours, plain].forEach(f);
  const values = async (m: Pick<DaemonMetrics, 'requests' | 'requestDuration'>) => [await m.requests.get(), await m.requestDuration.get()].map((v) => v.values);
  const same = async () => assert.deepEqual(await values(ours), await values(plain));
  for (const seconds of [0.0004, 0.005, 0.003, 7, 31, 0]) {
    both((m) => {
      m.requests.inc(labels);
      m.requests.inc(other, 2);
      m.requestDuration.observe(labels, seconds);
    });
  }
  await same();
  assert.equal((await ours.requests.get()).values.find((v) => v.labels.response_code === '200')?.value, 6);
  assert.equal((await ours.requestDuration.get()).values.find((v) => v.metricName?.endsWith('_count') && v.labels.response_code === '200')?.value, 6);
  // Values prom-client refuses are still refused.
  assert.throws(() => ours.requests.inc(labels, -1));
  assert.throws(() => ours.requestDuration.observe(labels, Number.NaN));
  both((m) => {
    m.requests.remove(labels);
    m.requestDuration.reset();
    m.requests.inc(labels);
    m.requestDuration.observe(labels, 0.2);
  });
  await same();
  assert.equal((await ours.requests.get()).values.find((v) => v.labels.response_code === '200')?.value, 1);
});
