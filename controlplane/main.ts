// `nodemesh controlplane`: config source, CA and control API in one process,
// until SIGINT or SIGTERM.

import { parseFlags, usageOf } from '../cli/args.ts';
import { logger } from '../core/log.ts';
import { KubeConfig } from '@kubernetes/client-node';
import { UsageError } from '../cli/args.ts';
import type { ConfigSource } from './source.ts';
import { FileSource } from './file-source.ts';
import { CertificateAuthority, type CaStore } from './ca.ts';
import { DirCaStore } from './ca-dir-store.ts';
import { FileTokenAuthenticator, type NodeAuthenticator } from './node-auth.ts';
import { KubernetesSource } from './kubernetes-source.ts';
import { TokenReviewAuthenticator } from './token-review-authenticator.ts';
import { SecretCaStore } from './ca-secret-store.ts';
import { startControlPlane } from './server.ts';

const log = logger('controlplane');

const FLAGS = {
  source: { type: 'string', required: true, description: '"kubernetes" (watch the API server), or a directory of Kubernetes YAML (Namespaces, Pods, Services, HTTPRoutes, AuthorizationPolicies)' },
  listen: { type: 'string', default: '0.0.0.0:15010', description: 'control API address, host:port' },
  'ca-dir': { type: 'string', description: 'directory mode: where the CA root is kept (ca-key.pem, ca-cert.pem); ca-cert.pem is the nodes\' --ca-file' },
  'node-tokens': { type: 'string', description: 'directory mode: file of "node-name: token" lines' },
  'trust-domain': { type: 'string', default: 'cluster.local', description: 'SPIFFE trust domain of workload identities' },
  'serving-hosts': { type: 'string', description: 'comma-separated names and IPs the nodes dial, for the serving certificate' },
} as const;
const SUMMARY = 'Runs the control plane: watches the config source, signs workload certificates, streams config to the nodes.';

const KUBERNETES = 'kubernetes';

interface Backends {
  source: ConfigSource;
  caStore: CaStore & { describe: string };
  authenticator: NodeAuthenticator;
  servingHosts: string[];
}

/**
 * What --source selects: the API server (CA in a Secret, TokenReview for node
 * tokens, the Service name in the serving certificate) or a directory (CA in
 * --ca-dir, tokens from --node-tokens).
 */
function createBackends(flags: { source: string; 'ca-dir'?: string; 'node-tokens'?: string }): Backends {
  if (flags.source === KUBERNETES) {
    const kubeConfig = new KubeConfig();
    if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
    else kubeConfig.loadFromDefault();
    const namespace = process.env.POD_NAMESPACE ?? 'nodemesh-system';
    const service = `nodemesh-controlplane.${namespace}.svc`;
    return {
      source: new KubernetesSource(kubeConfig),
      caStore: Object.assign(new SecretCaStore(kubeConfig, { namespace }), { describe: `Secret ${namespace}/nodemesh-ca` }),
      authenticator: new TokenReviewAuthenticator(kubeConfig, { namespace }),
      servingHosts: [service, `${service}.cluster.local`, 'localhost', '127.0.0.1'],
    };
  }
  const caDir = flags['ca-dir'];
  const tokens = flags['node-tokens'];
  if (!caDir || !tokens) throw new UsageError(`controlplane: --source ${flags.source} is a directory: --ca-dir and --node-tokens are required`);
  const store = new DirCaStore(caDir);
  return {
    source: new FileSource(flags.source),
    caStore: Object.assign(store, { describe: store.certPath }),
    authenticator: FileTokenAuthenticator.fromFile(tokens),
    servingHosts: [],
  };
}

/** `nodemesh controlplane ...`: resolves when the control plane has stopped. */
export async function runControlPlaneCommand(argv: string[]): Promise<void> {
  const flags = parseFlags('controlplane', SUMMARY, argv, FLAGS);
  if (flags.help) {
    process.stdout.write(usageOf('controlplane', SUMMARY, FLAGS));
    return;
  }
  const trustDomain = flags['trust-domain'];
  const servingHosts = flags['serving-hosts']?.split(',').map((h) => h.trim()).filter(Boolean);
  const backends = createBackends(flags);
  const ca = await CertificateAuthority.loadOrCreate(backends.caStore, { trustDomain });
  const hosts = [...backends.servingHosts, ...(servingHosts ?? [])];
  const cp = await startControlPlane({
    source: backends.source,
    listen: flags.listen,
    ca,
    authenticator: backends.authenticator,
    trustDomain,
    servingHosts: hosts.length ? hosts : undefined,
  });
  log.info('control plane running', { address: cp.address, ca: backends.caStore.describe, source: flags.source });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info('shutting down', { signal });
  await cp.stop();
  log.info('control plane stopped');
}
