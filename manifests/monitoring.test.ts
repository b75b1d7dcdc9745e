// The optional monitoring overlay (manifests/monitoring/) and the Grafana
// dashboard: the overlay renders to the base plus a Service and a ServiceMonitor
// that reach the node pods' metrics port, and every series the dashboard asks
// for is one the node registers, under the name it registers (a renamed metric
// fails here, not as an empty panel).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { createMetrics } from '../daemon/metrics.ts';
import { registerAgentMetrics } from '../agent/agent-metrics.ts';
import { kustomize } from './testdata/kustomize.ts';

const OVERLAY = fileURLToPath(new URL('./monitoring/', import.meta.url));
const DASHBOARD = JSON.parse(readFileSync(new URL('./monitoring/grafana-dashboard.json', import.meta.url), 'utf8')) as {
  uid: string; templating: { list: { name: string }[] }; panels: { type: string; title: string; targets?: { expr: string }[] }[];
};

test('monitoring overlay: the base, plus a headless Service over the node pods\' :15020 and a ServiceMonitor scraping it', () => {
  const base = kustomize(fileURLToPath(new URL('./', import.meta.url)));
  const overlay = kustomize(OVERLAY);
  assert.equal(overlay.length, base.length + 2);
  const daemonset = overlay.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'nodemesh-node')!;
  const service = overlay.find((o) => o.kind === 'Service' && o.metadata.name === 'nodemesh-node-metrics')!;
  const monitor = overlay.find((o) => o.kind === 'ServiceMonitor')!;
  assert.equal(service.metadata.namespace, 'nodemesh-system');
  assert.equal(service.spec.clusterIP, 'None');
  const podLabels = daemonset.spec.template.metadata.labels as Record<string, string>;
  for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>)) assert.equal(podLabels[k], v, `the Service selects the node pods (${k})`);
  assert.deepEqual(service.spec.ports, [{ name: 'metrics', port: 15020, targetPort: 15020 }]);
  assert.equal(daemonset.spec.template.metadata.annotations['prometheus.io/port'], '15020', 'the same port the scrape annotations name');
  assert.equal(monitor.apiVersion, 'monitoring.coreos.com/v1');
  assert.equal(monitor.metadata.namespace, 'nodemesh-system');
  for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels as Record<string, string>)) assert.equal(service.metadata.labels[k], v, 'the ServiceMonitor selects the Service');
  assert.deepEqual(monitor.spec.namespaceSelector.matchNames, ['nodemesh-system']);
  assert.deepEqual(monitor.spec.endpoints.map((e: { port: string; path: string }) => [e.port, e.path]), [['metrics', '/metrics']]);
});

test('grafana dashboard: every nodemesh_* series it queries is registered by the node, and no doubled prefix is left', async () => {
  const registry = new Registry();
  createMetrics(registry);
  registerAgentMetrics(registry, {
    store: { version: 1 }, certs: { status: () => [] }, control: { status: () => ({ connected: true }) },
  } as unknown as Parameters<typeof registerAgentMetrics>[1]);
  const known = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    known.add(m.name);
    if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) known.add(m.name + suffix);
  }
  const queried = new Set<string>();
  for (const panel of DASHBOARD.panels) for (const target of panel.targets ?? []) for (const [name] of target.expr.matchAll(/nodemesh_[a-z_]+/g)) queried.add(name);
  assert.ok(queried.size >= 10, `the dashboard queries the node and request metrics: ${[...queried].join(', ')}`);
  for (const name of queried) assert.ok(known.has(name), `${name} is a metric the node registers`);
  assert.ok([...queried].every((n) => !n.includes('process_process')));
  for (const needed of ['nodemesh_requests_total', 'nodemesh_request_duration_seconds_bucket', 'nodemesh_tcp_connections_denied_total', 'nodemesh_agent_certificate_expiry_timestamp_seconds', 'nodemesh_agent_process_resident_memory_bytes']) {
    assert.ok(queried.has(needed), `a panel shows ${needed}`);
  }
  // Destination nodes count meshed requests only with --destination-request-metrics: a request panel
  // reads each request once, from its source node, or from the destination for a plaintext client.
  for (const panel of DASHBOARD.panels) {
    for (const { expr } of panel.targets ?? []) {
      for (const [selector] of expr.matchAll(/nodemesh_request(?:s_total|_duration_seconds_bucket)\{[^}]*\}/g)) {
        assert.ok(selector.includes('reporter="source"') || selector.includes('connection_security_policy="none"'), `${panel.title}: ${selector} counts meshed requests only some nodes report`);
      }
    }
  }
  assert.equal(DASHBOARD.uid, 'nodemesh-overview');
  assert.deepEqual(DASHBOARD.templating.list.map((v) => v.name), ['datasource', 'namespace']);
  assert.ok(DASHBOARD.panels.filter((p) => p.type === 'timeseries').every((p) => p.title && p.targets?.length));
});
