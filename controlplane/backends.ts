// What a control plane runs on, chosen by where its config comes from. From the
// API server: the CA root in a Secret, node tokens checked by TokenReview, the
// Service's name in the serving certificate. From a directory of YAML: the CA
// root in a directory, node tokens from a file. The `nodemesh controlplane`
// command (cli/controlplane.ts) picks one and starts the server on it.

import { KubeConfig } from '@kubernetes/client-node';
import type { ConfigSource } from './source.ts';
import { FileSource } from './file-source.ts';
import type { CaStore } from './ca.ts';
import { DirCaStore } from './ca-dir-store.ts';
import { FileTokenAuthenticator, type NodeAuthenticator } from './node-auth.ts';
import { KubernetesSource } from './kubernetes-source.ts';
import { TokenReviewAuthenticator } from './token-review-authenticator.ts';
import { SecretCaStore } from './ca-secret-store.ts';
import { KubeApi } from './kubernetes-api.ts';
import { KubernetesRouteStatusWriter } from './route-status-writer.ts';
import type { RouteStatus } from './route-status.ts';

export type BackendOptions =
  | {
    kind: 'kubernetes';
    kubeConfig: KubeConfig;
    /** Where the CA Secret, the trust-bundle ConfigMap and the control plane's Service are. */
    namespace: string;
  }
  | {
    kind: 'directory';
    /** Kubernetes YAML: Namespaces, Pods, Services, HTTPRoutes, AuthorizationPolicies. */
    configDir: string;
    /** Where the CA root is kept (ca-key.pem, ca-cert.pem). */
    caDir: string;
    /** File of "node-name: token" lines. */
    nodeTokens: string;
  };

export interface Backends {
  source: ConfigSource;
  /** `describe` names where the CA root is, for the log. */
  caStore: CaStore & { describe: string };
  authenticator: NodeAuthenticator;
  /** Names the nodes dial that the serving certificate must carry. */
  servingHosts: string[];
  /** Where route status goes besides the log: the status subresource in Kubernetes. */
  routeStatus?: (status: RouteStatus) => void;
}

/** The API server of the cluster this process runs in, else the one of the default kubeconfig ($KUBECONFIG, ~/.kube/config). */
export function loadKubeConfig(): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}

export function createBackends(opts: BackendOptions): Backends {
  if (opts.kind === 'kubernetes') {
    const { kubeConfig, namespace } = opts;
    const service = `nodemesh-controlplane.${namespace}.svc`;
    const statusWriter = new KubernetesRouteStatusWriter(new KubeApi(kubeConfig));
    return {
      source: new KubernetesSource(kubeConfig),
      caStore: Object.assign(new SecretCaStore(kubeConfig, { namespace }), { describe: `Secret ${namespace}/nodemesh-ca` }),
      authenticator: new TokenReviewAuthenticator(kubeConfig, { namespace }),
      servingHosts: [service, `${service}.cluster.local`, 'localhost', '127.0.0.1'],
      routeStatus: (status) => statusWriter.write(status),
    };
  }
  const store = new DirCaStore(opts.caDir);
  return {
    source: new FileSource(opts.configDir),
    caStore: Object.assign(store, { describe: store.certPath }),
    authenticator: FileTokenAuthenticator.fromFile(opts.nodeTokens),
    servingHosts: [],
  };
}
