import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { registerAgentMetrics } from './agent-metrics.ts';

test('agent metrics: the process series carry the nodemesh_agent_ prefix once (no nodemesh_agent_process_process_*)', async () => {
  const registry = new Registry();
  const sources = {
    store: { version: 7 },
    certs: { status: () => [{ identity: 'spiffe://cluster.local/ns/demo/sa/client', notAfter: '2030-01-01T00:00:00.000Z' }] },
    control: { status: () => ({ connected: true }) },
  } as unknown as Parameters<typeof registerAgentMetrics>[1];
  registerAgentMetrics(registry, sources);
  const text = await registry.metrics();
  assert.match(text, /^nodemesh_agent_process_cpu_seconds_total /m);
  assert.match(text, /^nodemesh_agent_process_resident_memory_bytes /m);
  assert.match(text, /^nodemesh_agent_nodejs_heap_size_used_bytes /m);
  assert.doesNotMatch(text, /process_process_/);
  assert.match(text, /^nodemesh_agent_control_plane_connected 1$/m);
  assert.match(text, /^nodemesh_agent_config_version 7$/m);
  assert.match(text, /^nodemesh_agent_certificate_expiry_timestamp_seconds\{identity="spiffe:\/\/cluster.local\/ns\/demo\/sa\/client"\} 1893456000$/m);
});

test('the certificate expiry gauge has a series only for the identities the node holds now', async () => {
  const registry = new Registry();
  let identities: string[] = [];
  const sources = {
    store: { version: 1 },
    certs: { status: () => identities.map((identity) => ({ identity, notAfter: '2030-01-01T00:00:00.000Z' })) },
    control: { status: () => ({ connected: true }) },
  } as unknown as Parameters<typeof registerAgentMetrics>[1];
  registerAgentMetrics(registry, sources);
  const series = async () => (await registry.metrics()).split('\n').filter((l) => l.startsWith('nodemesh_agent_certificate_expiry_timestamp_seconds{'));
  for (let i = 0; i < 40; i++) {
    identities = [`spiffe://cluster.local/ns/demo/sa/job-${i}`];
    assert.equal((await series()).length, 1);
  }
  assert.match((await series())[0]!, /sa\/job-39"/);
  identities = [];
  assert.deepEqual(await series(), []);
});
