// The CA root in Kubernetes: Secret `nodemesh-ca` (keys ca.key, ca.crt) in the
// control plane's namespace. Created with POST, so of two replicas starting
// together exactly one root is stored (the loser gets 409 and reads the winner's);
// never overwritten, and an operator-supplied Secret is used as is. The root
// certificate is published in ConfigMap `nodemesh-trust-bundle` (key ca.crt), which
// the node DaemonSet mounts to verify the control plane.

import type { KubeConfig } from '@kubernetes/client-node';
import type { CaKeyPair, CaStore } from './ca.ts';
import { KubeApi, isStatus } from './kubernetes-api.ts';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';

const log = logger('ca');

export const CA_SECRET = 'nodemesh-ca';
export const TRUST_BUNDLE_CONFIGMAP = 'nodemesh-trust-bundle';
const KEY = 'ca.key';
const CERT = 'ca.crt';
// Concurrent replicas may both update the ConfigMap; each retry re-reads it.
const PUBLISH_ATTEMPTS = 5;

interface SecretBody {
  data?: Record<string, string>;
}

interface ConfigMapBody {
  metadata: { resourceVersion?: string } & Record<string, unknown>;
  data?: Record<string, string>;
}

export interface SecretCaStoreOptions {
  /** The control plane's namespace (where the Secret and the ConfigMap live). */
  namespace: string;
  secretName?: string;
  configMapName?: string;
}

export class SecretCaStore implements CaStore {
  readonly #api: KubeApi;
  readonly #namespace: string;
  readonly #secretName: string;
  readonly #configMapName: string;

  constructor(config: KubeConfig, options: SecretCaStoreOptions) {
    this.#api = new KubeApi(config);
    this.#namespace = options.namespace;
    this.#secretName = options.secretName ?? CA_SECRET;
    this.#configMapName = options.configMapName ?? TRUST_BUNDLE_CONFIGMAP;
  }

  get #secretsPath(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.#namespace)}/secrets`;
  }

  get #configMapsPath(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.#namespace)}/configmaps`;
  }

  async load(): Promise<CaKeyPair | null> {
    let secret: SecretBody;
    try {
      secret = await this.#api.get<SecretBody>(`${this.#secretsPath}/${this.#secretName}`);
    } catch (err) {
      if (isStatus(err, 404)) return null;
      throw err;
    }
    const pair = this.#pairOf(secret);
    await this.#publish(pair.certPem);
    return pair;
  }

  async saveIfAbsent(pair: CaKeyPair): Promise<CaKeyPair> {
    let stored = pair;
    try {
      await this.#api.post(this.#secretsPath, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: this.#secretName, namespace: this.#namespace, labels: { 'app.kubernetes.io/name': 'nodemesh', 'app.kubernetes.io/component': 'ca' } },
        type: 'Opaque',
        // The API server itself then refuses any later change to the root.
        immutable: true,
        data: { [KEY]: base64(pair.keyPem), [CERT]: base64(pair.certPem) },
      });
      log.info('stored a new CA root', { secret: `${this.#namespace}/${this.#secretName}` });
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
      stored = this.#pairOf(await this.#api.get<SecretBody>(`${this.#secretsPath}/${this.#secretName}`));
      log.info('another replica stored the CA root first; using it', { secret: `${this.#namespace}/${this.#secretName}` });
    }
    await this.#publish(stored.certPem);
    return stored;
  }

  #pairOf(secret: SecretBody): CaKeyPair {
    const field = (key: string): string => {
      const value = secret.data?.[key];
      if (!value) throw new NodemeshError(ErrorCode.BAD_CA, `Secret ${this.#namespace}/${this.#secretName}: data.${key} is missing: the Secret must hold the CA key as ${KEY} (PKCS#8 PEM) and its certificate as ${CERT}; fix it or delete it to let the control plane create a new root`);
      return Buffer.from(value, 'base64').toString('utf8');
    };
    return { keyPem: field(KEY), certPem: field(CERT) };
  }

  /** Creates or updates the trust-bundle ConfigMap so it holds exactly this root. */
  async #publish(certPem: string): Promise<void> {
    const path = `${this.#configMapsPath}/${this.#configMapName}`;
    for (let attempt = 1; ; attempt++) {
      try {
        const existing = await this.#api.get<ConfigMapBody>(path).catch((err: unknown) => {
          if (isStatus(err, 404)) return undefined;
          throw err;
        });
        if (!existing) {
          await this.#api.post(this.#configMapsPath, {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: this.#configMapName, namespace: this.#namespace, labels: { 'app.kubernetes.io/name': 'nodemesh', 'app.kubernetes.io/component': 'trust-bundle' } },
            data: { [CERT]: certPem },
          });
        } else if (existing.data?.[CERT] !== certPem) {
          // Carries resourceVersion: a concurrent writer makes this fail with 409, not vanish.
          await this.#api.put(path, { ...existing, data: { ...existing.data, [CERT]: certPem } });
        }
        return;
      } catch (err) {
        if (!isStatus(err, 409) || attempt >= PUBLISH_ATTEMPTS) {
          throw new NodemeshError(ErrorCode.TRUST_BUNDLE, `cannot publish the CA root in ConfigMap ${this.#namespace}/${this.#configMapName}: ${(err as Error).message}; check the control plane's Role allows get, create and update on that ConfigMap`, { cause: err });
        }
      }
    }
  }
}

function base64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}
