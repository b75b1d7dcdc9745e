// `nodemesh node`: the node agent. It restores the last-known-good config from
// disk first (so it serves while the control plane is down), then watches the
// control plane, keeps workload certificates, serves the admin, metrics and
// health endpoints, runs the data plane and captures the traffic of enrolled
// local pods, and reports ready once config, certificates and listeners are.
// Stopping leaves the capture rules in place: during an agent restart, enrolled
// pods' traffic must not escape the mesh in plaintext (`--uninstall` removes them).

import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';
import { parseFlags, usageOf, UsageError } from '../cli/args.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import { readLastKnownGood } from './last-known-good.ts';
import { ControlClient, configPath } from './control-client.ts';
import { CertManager } from './cert-manager.ts';
import { Readiness } from './readiness.ts';
import { AdminServer } from './admin-server.ts';
import { HealthServer } from './health-server.ts';
import { MetricsServer } from './metrics-server.ts';
import { registerAgentMetrics } from './agent-metrics.ts';
import { CaptureReconciler, enrollmentFromConfig, uninstallCapture } from './enrollment.ts';
import { startDaemon } from '../daemon/daemon.ts';
import type { Daemon, DaemonOptions } from '../daemon/daemon.ts';

const log = logger('node');
// Below the Kubernetes default termination grace period (30 s).
const DRAIN_DEADLINE_MS = 20_000;

export interface NodeOptions {
  nodeName: string;
  /** "host:port" of the control API. */
  controlPlane: string;
  tokenFile: string;
  caFile: string;
  stateDir: string;
  adminAddr?: string;
  metricsAddr?: string;
  healthAddr?: string;
  dataPlane: boolean;
  /** HTTP handling of the data plane (detection timeout, retries). */
  http?: DaemonOptions['http'];
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
  daemon: Daemon | undefined;
  /** Lets open connections finish, up to the deadline. */
  drain(deadlineMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startNode(opts: NodeOptions): Promise<RunningNode> {
  let caPem: string;
  try {
    caPem = readFileSync(opts.caFile, 'utf8');
  } catch (err) {
    throw new NodemeshError('NM_CA_FILE', `--ca-file ${opts.caFile}: ${(err as Error).message}; give the PEM CA that signed the control plane's serving certificate`);
  }
  const readiness = new Readiness();
  const configSynced = readiness.register('config synced');
  const certsIssued = readiness.register('certificates issued');
  const listenersBound = readiness.register('listeners bound');

  const store = new ConfigStore(opts.nodeName);
  const saved = readLastKnownGood(configPath(opts.stateDir));
  if (saved) store.restore(saved);
  const control = new ControlClient({
    nodeName: opts.nodeName, address: opts.controlPlane, tokenFile: opts.tokenFile, caPem, stateDir: opts.stateDir, store,
  });
  const certs = new CertManager({ store, signer: control });
  const registry = new Registry();
  registerAgentMetrics(registry, { store, certs, control });

  const closers: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const close of closers.splice(0).reverse()) await close();
  };
  let daemon: Daemon | undefined;
  try {
    const admin = await AdminServer.listen(opts.adminAddr ?? '127.0.0.1:15000', {
      store, certs, control, connections: () => daemon?.connections() ?? [],
      explain: opts.dataPlane ? (query) => {
        if (!daemon) throw new Error('the data plane is still starting');
        return daemon.explain(query);
      } : undefined,
      tap: opts.dataPlane ? (listener) => daemon?.tap(listener) ?? (() => {}) : undefined,
    });
    closers.push(() => admin.close());
    const metrics = await MetricsServer.listen(opts.metricsAddr ?? '0.0.0.0:15020', registry);
    closers.push(() => metrics.close());
    const health = await HealthServer.listen(opts.healthAddr ?? '0.0.0.0:15021', readiness);
    closers.push(() => health.close());
    if (opts.dataPlane) {
      const running = await startDaemon({ config: store, certs, registry, http: opts.http });
      daemon = running;
      closers.push(() => running.stop());
      // Capture only once the listeners it redirects to are bound.
      const capture = enrollmentFromConfig(store, new CaptureReconciler());
      closers.push(() => capture.stop());
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
        await daemon?.drain(deadlineMs);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

const NODE_FLAGS = {
  'node-name': { type: 'string', required: true, description: 'name of this Kubernetes node' },
  controlplane: { type: 'string', required: true, description: 'control API address, host:port' },
  'token-file': { type: 'string', required: true, description: 'file holding this node\'s bearer token' },
  'ca-file': { type: 'string', required: true, description: 'PEM CA of the control plane\'s serving certificate' },
  'state-dir': { type: 'string', default: '/var/lib/nodemesh', description: 'where the last-known-good config is kept' },
  'admin-addr': { type: 'string', default: '127.0.0.1:15000', description: 'admin API address' },
  'metrics-addr': { type: 'string', default: '0.0.0.0:15020', description: 'Prometheus /metrics address' },
  'health-addr': { type: 'string', default: '0.0.0.0:15021', description: '/healthz/ready address' },
  'no-dataplane': { type: 'boolean', description: 'run the agent only: no traffic capture, no proxy' },
  uninstall: { type: 'boolean', description: 'remove every capture rule from this node and exit' },
  'http-detect-timeout-ms': { type: 'string', default: '100', description: 'how long an undeclared port waits for the first bytes before it is treated as opaque TCP' },
  'http-retry-statuses': { type: 'string', default: '503', description: 'comma-separated HTTP statuses retried on another endpoint (within the retry budget)' },
  'http-max-attempts': { type: 'string', default: '3', description: 'attempts per HTTP request, the first included' },
} as const;
const NODE_SUMMARY = 'Runs the node agent and data plane: one per Kubernetes node.';

/** `nodemesh node ...`: resolves when the node has shut down (SIGTERM/SIGINT: drain, then stop). */
export async function runNodeCommand(argv: string[]): Promise<void> {
  const flags = parseFlags('node', NODE_SUMMARY, argv, NODE_FLAGS, { exemptsRequired: 'uninstall' });
  if (flags.help) {
    process.stdout.write(usageOf('node', NODE_SUMMARY, NODE_FLAGS));
    return;
  }
  if (flags.uninstall) {
    await uninstallCapture();
    log.info('capture rules removed from this node');
    return;
  }
  const node = await startNode({
    nodeName: flags['node-name'],
    controlPlane: flags.controlplane,
    tokenFile: flags['token-file'],
    caFile: flags['ca-file'],
    stateDir: flags['state-dir'],
    adminAddr: flags['admin-addr'],
    metricsAddr: flags['metrics-addr'],
    healthAddr: flags['health-addr'],
    dataPlane: !flags['no-dataplane'],
    http: {
      detectTimeoutMs: integerFlag('http-detect-timeout-ms', flags['http-detect-timeout-ms'], 1, 10_000),
      retryStatuses: flags['http-retry-statuses'].split(',').filter((v) => v.trim()).map((v) => integerFlag('http-retry-statuses', v.trim(), 500, 599)),
      maxAttempts: integerFlag('http-max-attempts', flags['http-max-attempts'], 1, 10),
    },
  });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info('shutting down: draining connections', { signal, deadlineMs: DRAIN_DEADLINE_MS });
  // Not ready any more, so the kubelet and load balancers stop sending new work.
  node.readiness.register('shutting down');
  await node.drain(DRAIN_DEADLINE_MS);
  await node.stop();
  log.info('node agent stopped');
}

function integerFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`node: --${name}: ${JSON.stringify(value)} is not a whole number from ${min} to ${max}`);
  return n;
}
