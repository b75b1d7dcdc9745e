// The agent's own Prometheus metrics, read at scrape time from the live state:
// whether the control-plane stream is up, which config version is applied, and
// when each workload certificate expires (alert before it does), and the
// process's own (prom-client's default metrics, which are already named
// `process_*` and `nodejs_*`: the prefix is `nodemesh_agent_` alone, so a series
// reads `nodemesh_agent_process_cpu_seconds_total`, never `..._process_process_...`).

import { Gauge, collectDefaultMetrics } from 'prom-client';
import type { Registry } from 'prom-client';
import type { ConfigStore } from '../daemon/config-store.ts';
import type { CertManager } from './cert-manager.ts';
import type { ControlClient } from './control-client.ts';

export function registerAgentMetrics(registry: Registry, sources: { store: ConfigStore; certs: CertManager; control: ControlClient }): void {
  collectDefaultMetrics({ register: registry, prefix: 'nodemesh_agent_' });
  new Gauge({
    name: 'nodemesh_agent_control_plane_connected',
    help: '1 while the Watch stream to the control plane is up, else 0.',
    registers: [registry],
    collect() {
      this.set(sources.control.status().connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'nodemesh_agent_config_version',
    help: 'Version of the applied mesh config (within the control plane epoch).',
    registers: [registry],
    collect() {
      this.set(sources.store.version);
    },
  });
  new Gauge({
    name: 'nodemesh_agent_certificate_expiry_timestamp_seconds',
    help: 'When the current certificate of each local workload identity expires (Unix seconds).',
    labelNames: ['identity'],
    registers: [registry],
    collect() {
      this.reset();
      for (const c of sources.certs.status()) {
        if (c.notAfter) this.set({ identity: c.identity }, Date.parse(c.notAfter) / 1000);
      }
    },
  });
}
