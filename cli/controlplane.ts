// `nodemesh controlplane`: config source, CA and control API in one process,
// until SIGINT or SIGTERM. --source picks the backends (controlplane/backends.ts):
// "kubernetes", or a directory of YAML, which needs --ca-dir and --node-tokens.

import { logger } from '../core/log.ts';
import { createBackends, loadKubeConfig, type BackendOptions } from '../controlplane/backends.ts';
import { CertificateAuthority } from '../controlplane/ca.ts';
import { startControlPlane } from '../controlplane/server.ts';
import { parseFlags, usageOf, UsageError } from './args.ts';

const log = logger('controlplane');

const FLAGS = {
  source: { type: 'string', required: true, description: '"kubernetes" (watch the API server), or a directory of Kubernetes YAML (Namespaces, Pods, Services, HTTPRoutes, AuthorizationPolicies)' },
  listen: { type: 'string', default: '0.0.0.0:15010', description: 'control API address, host:port' },
  'ca-dir': { type: 'string', description: 'directory mode: where the CA root is kept (ca-key.pem, ca-cert.pem); ca-cert.pem is the nodes\' --ca-file' },
  'node-tokens': { type: 'string', description: 'directory mode: file of "node-name: token" lines' },
  'trust-domain': { type: 'string', default: 'cluster.local', description: 'SPIFFE trust domain of workload identities' },
  'serving-hosts': { type: 'string', description: 'comma-separated names and IPs the nodes dial, for the serving certificate' },
  'status-listen': { type: 'string', description: 'host:port of a read-only JSON endpoint with the routes\' status (GET /routes) and the refused objects (GET /rejected); for file mode above all' },
} as const;
const SUMMARY = 'Runs the control plane: watches the config source, signs workload certificates, streams config to the nodes.';

/** `nodemesh controlplane ...`: resolves when the control plane has stopped. */
export async function runControlPlaneCommand(argv: string[]): Promise<void> {
  const flags = parseFlags('controlplane', SUMMARY, argv, FLAGS);
  if (flags.help) {
    process.stdout.write(usageOf('controlplane', SUMMARY, FLAGS));
    return;
  }
  const trustDomain = flags['trust-domain'];
  const servingHosts = flags['serving-hosts']?.split(',').map((h) => h.trim()).filter(Boolean);
  const backends = createBackends(backendOptions(flags));
  const ca = await CertificateAuthority.loadOrCreate(backends.caStore, { trustDomain });
  const hosts = [...backends.servingHosts, ...(servingHosts ?? [])];
  const cp = await startControlPlane({
    source: backends.source,
    listen: flags.listen,
    ca,
    authenticator: backends.authenticator,
    trustDomain,
    servingHosts: hosts.length ? hosts : undefined,
    routeStatus: backends.routeStatus,
    statusListen: flags['status-listen'],
  });
  log.info('control plane running', { address: cp.address, ca: backends.caStore.describe, source: flags.source, ...(cp.statusAddress ? { status: cp.statusAddress } : {}) });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info('shutting down', { signal });
  await cp.stop();
  log.info('control plane stopped');
}

function backendOptions(flags: { source: string; 'ca-dir'?: string; 'node-tokens'?: string }): BackendOptions {
  // POD_NAMESPACE comes from the Deployment (the downward API).
  if (flags.source === 'kubernetes') return { kind: 'kubernetes', kubeConfig: loadKubeConfig(), namespace: process.env.POD_NAMESPACE ?? 'nodemesh-system' };
  const caDir = flags['ca-dir'];
  const nodeTokens = flags['node-tokens'];
  if (!caDir || !nodeTokens) throw new UsageError(`controlplane: --source ${flags.source} is a directory: --ca-dir and --node-tokens are required`);
  return { kind: 'directory', configDir: flags.source, caDir, nodeTokens };
}
