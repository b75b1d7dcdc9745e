// The node agent's wiring: restores the last-known-good config from disk first
// (so it serves while the control plane is down), then watches the control
// plane, keeps workload certificates, serves the admin, metrics and health
// endpoints, runs the data plane and captures the traffic of enrolled local
// pods, and reports ready once config, certificates and listeners are.
// Stopping leaves the capture rules in place: during an agent restart, enrolled
// pods' traffic must not escape the mesh in plaintext. The `nodemesh node`
// command (cli/node.ts) runs it and removes the rules with `--uninstall`.

import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { Registry } from 'prom-client';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import { readLastKnownGood } from './last-known-good.ts';
import { ControlClient, configPath } from './control-client.ts';
import { CertManager } from './cert-manager.ts';
import { CertCache } from './cert-cache.ts';
import { Readiness } from './readiness.ts';
import { AdminServer } from './admin-server.ts';
import { HealthServer } from './health-server.ts';
import { MetricsServer } from './metrics-server.ts';
import { registerAgentMetrics } from './agent-metrics.ts';
import { CaptureReconciler, enrollmentFromConfig } from './enrollment.ts';
import type { EnrollmentLoop } from './enrollment.ts';
import { InPodCapture } from './in-pod-capture.ts';
import { PodNetnsFinder } from './pod-netns.ts';
import type { DaemonOptions } from '../daemon/daemon.ts';
import { startDataPlane } from '../daemon/workers.ts';
import type { DataPlane } from '../daemon/workers.ts';
import { Tracing } from '../daemon/tracing.ts';
import { releaseStartUpPages } from './start-up-pages.ts';

const log = logger('node');

export interface NodeOptions {
  nodeName: string;
  /** "host:port" of the control API. */
  controlPlane: string;
  tokenFile: string;
  caFile: string;
  stateDir: string;
  /** Where keys and certificates are kept for a restart: a memory-backed volume (none: memory only). */
  certDir?: string;
  adminAddr?: string;
  metricsAddr?: string;
  healthAddr?: string;
  dataPlane: boolean;
  /** Where pods' network namespaces are found, for in-pod capture (default: all of /var/run/netns). */
  podNetns?: { dir: string; prefix: string };
  /** HTTP handling of the data plane (detection timeout, retries). */
  http?: DaemonOptions['http'];
  /** Limits of the HBONE listener (handshake deadline, streams per peer). */
  hbone?: DaemonOptions['hbone'];
  /** Per source pod limits of the outbound side. */
  sourceLimits?: DaemonOptions['sourceLimits'];
  /** OTLP/HTTP export of request spans, and a JSON access-log line per request (daemon/tracing.ts). */
  tracing?: { otlpEndpoint?: string; accessLogRequests?: boolean };
  /** Data-plane threads (daemon/workers.ts; default 1). */
  workers?: number;
}

export interface RunningNode {
  store: ConfigStore;
  certs: CertManager;
  control: ControlClient;
  readiness: Readiness;
  /** Bound "host:port" of each server (the real port when 0 was asked for). */
  adminAddress: string;
  metricsAddress: string;
  healthAddress: string;
  /** The data plane, unless started with dataPlane: false. */
  daemon: DataPlane | undefined;
  /** Lets open connections finish, up to the deadline. */
  drain(deadlineMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startNode(opts: NodeOptions): Promise<RunningNode> {
  let caPem: string;
  try {
    caPem = readFileSync(opts.caFile, 'utf8');
  } catch (err) {
    throw new NodemeshError(ErrorCode.CA_FILE, `--ca-file ${opts.caFile}: ${(err as Error).message}; give the PEM CA that signed the control plane's serving certificate`);
  }
  const readiness = new Readiness();
  const configSynced = readiness.register('config synced');
  const certsIssued = readiness.register('certificates issued');
  const listenersBound = readiness.register('listeners bound');
  const podsCaptured = opts.dataPlane ? readiness.register('local pods captured') : () => {};
  readiness.onReady(() => {
    try {
      log.info('released the file pages only start-up used', releaseStartUpPages());
    } catch (err) {
      log.debug('cannot release start-up pages', { error: (err as Error).message });
    }
  });

  const store = new ConfigStore(opts.nodeName);
  const saved = readLastKnownGood(configPath(opts.stateDir));
  if (saved) store.restore(saved);
  const control = new ControlClient({
    nodeName: opts.nodeName, address: opts.controlPlane, tokenFile: opts.tokenFile, caPem, stateDir: opts.stateDir, store,
  });
  const certs = new CertManager({ store, signer: control, cache: opts.certDir ? new CertCache(opts.certDir) : undefined });
  const registry = new Registry();
  registerAgentMetrics(registry, { store, certs, control });

  const closers: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const close of closers.splice(0).reverse()) await close();
  };
  let daemon: DataPlane | undefined;
  let capture: EnrollmentLoop | undefined;
  try {
    const admin = await AdminServer.listen(opts.adminAddr ?? '127.0.0.1:15000', {
      store, certs, control, connections: async () => (await daemon?.connections()) ?? [], captured: () => capture?.captured() ?? new Map(),
      explain: opts.dataPlane ? (query) => {
        if (!daemon) throw new Error('the data plane is still starting');
        return daemon.explain(query);
      } : undefined,
      tap: opts.dataPlane ? (listener, filter) => daemon?.tap(listener, filter) ?? (() => {}) : undefined,
    });
    closers.push(() => admin.close());
    // The data plane's workers have registries of their own: with it, /metrics is their sum with this one.
    const metrics = await MetricsServer.listen(opts.metricsAddr ?? '0.0.0.0:15020', { metrics: () => daemon?.metrics() ?? registry.metrics(), contentType: registry.contentType });
    closers.push(() => metrics.close());
    const health = await HealthServer.listen(opts.healthAddr ?? '0.0.0.0:15021', readiness);
    closers.push(() => health.close());
    if (opts.dataPlane) {
      const tracing = await Tracing.create({ nodeName: opts.nodeName, ...opts.tracing });
      closers.push(() => tracing.shutdown());
      const running = await startDataPlane({
        config: store, certs, registry, http: opts.http, hbone: opts.hbone, sourceLimits: opts.sourceLimits, migrateQueuedConnections: true, tracing,
        workers: opts.workers, tracingOptions: opts.tracing,
      });
      daemon = running;
      closers.push(() => running.stop());
      // Capture only once the listeners it redirects to are bound.
      const inPod = {
        dataPlane: running, capture: new InPodCapture(), finder: new PodNetnsFinder(opts.podNetns?.dir, opts.podNetns?.prefix), nodeAddresses,
      };
      const loop = enrollmentFromConfig(store, new CaptureReconciler(), { inPod, onReconciled: () => store.synced && podsCaptured() });
      capture = loop;
      closers.push(() => loop.stop());
    }
    listenersBound();

    const checkReady = () => {
      if (!store.synced) return;
      configSynced();
      if (certs.allIssued()) certsIssued();
    };
    store.onChange(checkReady);
    certs.onChange(checkReady);
    checkReady();

    control.start();
    closers.push(() => control.close());
    certs.start();
    closers.push(() => certs.stop());
    log.info('node agent started', {
      node: opts.nodeName, controlPlane: opts.controlPlane, admin: admin.address, metrics: metrics.address, health: health.address,
      dataPlane: daemon?.ports ?? null,
    });
    return {
      store, certs, control, readiness, daemon,
      adminAddress: admin.address,
      metricsAddress: metrics.address,
      healthAddress: health.address,
      drain: async (deadlineMs) => {
        // Readiness probes (the same port on the node, SO_REUSEPORT) now reach the daemon replacing this one.
        await health.close();
        await daemon?.drain(deadlineMs);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** This node's own IPv4 addresses (the agent runs in the node's network namespace). */
function nodeAddresses(): string[] {
  return Object.values(networkInterfaces()).flat()
    .filter((a) => a !== undefined && a.family === 'IPv4' && !a.internal)
    .map((a) => a!.address);
}
