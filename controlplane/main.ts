// `nodemesh controlplane`: config source, CA and control API in one process,
// until SIGINT or SIGTERM.

import { parseFlags, usageOf } from '../cli/args.ts';
import { logger } from '../core/log.ts';
import type { ConfigSource } from './source.ts';
import { FileSource } from './file-source.ts';
import { CertificateAuthority } from './ca.ts';
import { DirCaStore } from './ca-dir-store.ts';
import { FileTokenAuthenticator } from './node-auth.ts';
import { startControlPlane } from './server.ts';

const log = logger('controlplane');

const FLAGS = {
  source: { type: 'string', required: true, description: 'directory of Kubernetes YAML (Namespaces, Pods, Services, HTTPRoutes, AuthorizationPolicies)' },
  listen: { type: 'string', default: '0.0.0.0:15010', description: 'control API address, host:port' },
  'ca-dir': { type: 'string', required: true, description: 'where the CA root is kept (ca-key.pem, ca-cert.pem); ca-cert.pem is the nodes\' --ca-file' },
  'node-tokens': { type: 'string', required: true, description: 'file of "node-name: token" lines' },
  'trust-domain': { type: 'string', default: 'cluster.local', description: 'SPIFFE trust domain of workload identities' },
  'serving-hosts': { type: 'string', description: 'comma-separated names and IPs the nodes dial, for the serving certificate' },
} as const;
const SUMMARY = 'Runs the control plane: watches the config source, signs workload certificates, streams config to the nodes.';

/** The config source named by --source. */
function createSource(spec: string): ConfigSource {
  return new FileSource(spec);
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
  const store = new DirCaStore(flags['ca-dir']);
  const ca = await CertificateAuthority.loadOrCreate(store, { trustDomain });
  const cp = await startControlPlane({
    source: createSource(flags.source),
    listen: flags.listen,
    ca,
    authenticator: FileTokenAuthenticator.fromFile(flags['node-tokens']),
    trustDomain,
    servingHosts: servingHosts?.length ? servingHosts : undefined,
  });
  log.info('control plane running', { address: cp.address, caFile: store.certPath, source: flags.source });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info('shutting down', { signal });
  await cp.stop();
  log.info('control plane stopped');
}
