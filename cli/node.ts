// `nodemesh node`: runs the node agent (agent/node.ts) until SIGTERM or SIGINT,
// then turns unready, hands its listeners to the daemon replacing it, drains open
// connections for --drain-deadline-ms and stops.
// The deadline is the command's to choose because it must fit the pod's
// termination grace period, which the DaemonSet sets. `--uninstall` removes the
// capture rules that stopping leaves in place, and exits.

import { logger } from '../core/log.ts';
import { startNode } from '../agent/node.ts';
import { uninstallCapture } from '../agent/enrollment.ts';
import { parseFlags, usageOf, UsageError } from './args.ts';
import { parseOtlpEndpoint } from '../daemon/tracing.ts';
import { usableCpus } from '../daemon/workers.ts';

const log = logger('node');
// Below the Kubernetes default termination grace period (30 s), with room to stop after it.
const DRAIN_DEADLINE_MS = 20_000;

const FLAGS = {
  'node-name': { type: 'string', required: true, description: 'name of this Kubernetes node' },
  controlplane: { type: 'string', required: true, description: 'control API address, host:port' },
  'token-file': { type: 'string', required: true, description: 'file holding this node\'s bearer token' },
  'ca-file': { type: 'string', required: true, description: 'PEM CA of the control plane\'s serving certificate' },
  'state-dir': { type: 'string', default: '/var/lib/nodemesh', description: 'where the last-known-good config is kept' },
  'cert-dir': { type: 'string', default: '/run/nodemesh/certs', description: 'where workload keys and certificates are kept across a restart: a memory-backed volume, never a disk ("" keeps them in memory only)' },
  'admin-addr': { type: 'string', default: '127.0.0.1:15000', description: 'admin API address' },
  'metrics-addr': { type: 'string', default: '0.0.0.0:15020', description: 'Prometheus /metrics address' },
  'health-addr': { type: 'string', default: '0.0.0.0:15021', description: '/healthz/ready address' },
  'no-dataplane': { type: 'boolean', description: 'run the agent only: no traffic capture, no proxy' },
  uninstall: { type: 'boolean', description: 'remove every capture rule from this node and exit' },
  'http-detect-timeout-ms': { type: 'string', default: '100', description: 'how long an undeclared port waits for the first bytes before it is treated as opaque TCP' },
  'http-retry-statuses': { type: 'string', default: '503', description: 'comma-separated HTTP statuses retried on another endpoint (within the retry budget)' },
  'http-max-attempts': { type: 'string', default: '3', description: 'attempts per HTTP request, the first included' },
  'destination-request-metrics': { type: 'boolean', description: 'count meshed clients\' HTTP/gRPC requests on the destination node too (reporter="destination"); without it the destination reads a tunnel\'s HTTP only when policy refuses the connection as a whole (per-request 403s, or an ALLOW on methods or paths), a tap of requests or request tracing needs it, and splices it otherwise (the source node reports every request)' },
  'drain-deadline-ms': { type: 'string', default: String(DRAIN_DEADLINE_MS), description: 'on SIGTERM, how long open connections may run before they are closed (keep it below the pod\'s termination grace period)' },
  'pod-netns-dir': { type: 'string', default: '/var/run/netns', description: 'where the container runtime keeps pod network namespaces (pods found there are captured inside their namespace)' },
  'pod-netns-prefix': { type: 'string', default: '', description: 'only namespaces whose names start with this are searched for pods' },
  'max-connections-per-pod': { type: 'string', default: '10000', description: 'open outbound connections one local pod may hold through this node (a Pod\'s nodemesh.io/max-connections overrides it); past it, resets' },
  'max-requests-per-pod': { type: 'string', default: '1000', description: 'concurrent outbound HTTP requests of one local pod (a Pod\'s nodemesh.io/max-concurrent-requests overrides it); past it, 503' },
  'otlp-endpoint': { type: 'string', description: 'OpenTelemetry collector, OTLP/HTTP base URL (http://collector:4318): a span per proxied request, source and destination side (none without it)' },
  'access-log-requests': { type: 'boolean', description: 'a JSON access-log line per HTTP/gRPC request, with its trace id' },
  'hbone-idle-timeout-ms': { type: 'string', default: '120000', description: 'how long an accepted HBONE session with no open tunnel may stay before it is closed with GOAWAY (above the peers\' own 60 s pool idle timeout)' },
  workers: { type: 'string', default: 'auto', description: 'data-plane threads sharing the listeners (SO_REUSEPORT); auto: one per CPU this process may use (its affinity and cgroup CPU limit)' },
  'hbone-handshake-timeout-ms': { type: 'string', default: '10000', description: 'how long a peer at 15008 may take from connecting to its first HTTP/2 SETTINGS (TLS included) before it is closed' },
} as const;
const SUMMARY = 'Runs the node agent and data plane: one per Kubernetes node.';

/** `nodemesh node ...`: resolves when the node has shut down (SIGTERM/SIGINT: drain, then stop). */
export async function runNodeCommand(argv: string[]): Promise<void> {
  const flags = parseFlags('node', SUMMARY, argv, FLAGS, { exemptsRequired: 'uninstall' });
  if (flags.help) {
    process.stdout.write(usageOf('node', SUMMARY, FLAGS));
    return;
  }
  if (flags.uninstall) {
    await uninstallCapture({}, { dir: flags['pod-netns-dir'], prefix: flags['pod-netns-prefix'] });
    log.info('capture rules removed from this node');
    return;
  }
  const node = await startNode({
    nodeName: flags['node-name'],
    controlPlane: flags.controlplane,
    tokenFile: flags['token-file'],
    caFile: flags['ca-file'],
    stateDir: flags['state-dir'],
    certDir: flags['cert-dir'] || undefined,
    adminAddr: flags['admin-addr'],
    metricsAddr: flags['metrics-addr'],
    healthAddr: flags['health-addr'],
    dataPlane: !flags['no-dataplane'],
    podNetns: { dir: flags['pod-netns-dir'], prefix: flags['pod-netns-prefix'] },
    http: {
      detectTimeoutMs: integerFlag('http-detect-timeout-ms', flags['http-detect-timeout-ms'], 1, 10_000),
      retryStatuses: flags['http-retry-statuses'].split(',').filter((v) => v.trim()).map((v) => integerFlag('http-retry-statuses', v.trim(), 500, 599)),
      maxAttempts: integerFlag('http-max-attempts', flags['http-max-attempts'], 1, 10),
      destinationRequestMetrics: flags['destination-request-metrics'],
    },
    sourceLimits: {
      maxConnections: integerFlag('max-connections-per-pod', flags['max-connections-per-pod'], 1, 1_000_000),
      maxConcurrentRequests: integerFlag('max-requests-per-pod', flags['max-requests-per-pod'], 1, 1_000_000),
    },
    hbone: {
      handshakeTimeoutMs: integerFlag('hbone-handshake-timeout-ms', flags['hbone-handshake-timeout-ms'], 100, 120_000),
      idleTimeoutMs: integerFlag('hbone-idle-timeout-ms', flags['hbone-idle-timeout-ms'], 1_000, 3_600_000),
    },
    tracing: { otlpEndpoint: otlpEndpointFlag(flags['otlp-endpoint']), accessLogRequests: flags['access-log-requests'] },
    workers: flags.workers === 'auto' ? usableCpus() : integerFlag('workers', flags.workers, 1, 256),
  });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  const deadlineMs = integerFlag('drain-deadline-ms', flags['drain-deadline-ms'], 0, 600_000);
  log.info('shutting down: draining connections', { signal, deadlineMs });
  // Not ready any more, so the kubelet and load balancers stop sending new work.
  node.readiness.register('shutting down');
  await node.drain(deadlineMs);
  await node.stop();
  log.info('node agent stopped');
}

/** --otlp-endpoint checked at start: a bad URL is a usage error, not a node that silently exports nothing. */
function otlpEndpointFlag(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  try {
    return parseOtlpEndpoint(value);
  } catch (err) {
    throw new UsageError(`node: ${(err as Error).message}`);
  }
}

function integerFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`node: --${name}: ${JSON.stringify(value)} is not a whole number from ${min} to ${max}`);
  return n;
}
