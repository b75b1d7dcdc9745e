// Node authentication in Kubernetes: the node agent presents its projected
// ServiceAccount token (audience "nodemesh"); the API server vouches for it via
// TokenReview, and the token's pod binding tells which node the caller runs on.
// Only the node DaemonSet's ServiceAccount is accepted.

import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { KubeConfig } from '@kubernetes/client-node';
import type { NodeAuthenticator } from './node-auth.ts';
import { KubeApi, isStatus } from './kubernetes-api.ts';
import { ErrorCode, NodemeshError, NotAuthorizedError } from '../core/errors.ts';

export const TOKEN_AUDIENCE = 'nodemesh';
const NODE_NAME_KEY = 'authentication.kubernetes.io/node-name';
const POD_NAME_KEY = 'authentication.kubernetes.io/pod-name';
const POD_UID_KEY = 'authentication.kubernetes.io/pod-uid';

export interface TokenReviewOptions {
  /** Namespace of the node DaemonSet's ServiceAccount. */
  namespace?: string;
  serviceAccount?: string;
  /** How long a positive answer is reused; tokens are re-reviewed after it. */
  cacheTtlMs?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

interface PodBody {
  metadata?: { uid?: string };
  spec?: { nodeName?: string };
}

export class TokenReviewAuthenticator implements NodeAuthenticator {
  readonly #api: KubeApi;
  readonly #namespace: string;
  readonly #username: string;
  readonly #cache: LRUCache<string, string>;

  constructor(config: KubeConfig, options: TokenReviewOptions = {}) {
    this.#api = new KubeApi(config);
    this.#namespace = options.namespace ?? 'nodemesh-system';
    this.#username = `system:serviceaccount:${this.#namespace}:${options.serviceAccount ?? 'nodemesh-node'}`;
    this.#cache = new LRUCache({ max: 10_000, ttl: options.cacheTtlMs ?? 30_000 });
  }

  async authenticate(token: string): Promise<string> {
    // Keyed by a hash so the cache never holds usable credentials.
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.#cache.get(key);
    if (cached) return cached;
    const node = await this.#review(token);
    this.#cache.set(key, node);
    return node;
  }

  async #review(token: string): Promise<string> {
    let status: TokenReviewStatus;
    try {
      const review = await this.#api.post<{ status?: TokenReviewStatus }>('/apis/authentication.k8s.io/v1/tokenreviews', {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [TOKEN_AUDIENCE] },
      });
      status = review.status ?? {};
    } catch (err) {
      throw new NodemeshError(ErrorCode.TOKEN_REVIEW_FAILED, `cannot review node token with the Kubernetes API: ${(err as Error).message}; check that the control plane can reach the API server and its ClusterRole allows create on tokenreviews`, { cause: err });
    }
    if (!status.authenticated) {
      throw new NotAuthorizedError(`node token refused by the Kubernetes API server: ${status.error || 'not authenticated'}; check that the node mounts a current projected ServiceAccount token with audience "${TOKEN_AUDIENCE}" at its --token-file`);
    }
    if (!status.audiences?.includes(TOKEN_AUDIENCE)) {
      throw new NotAuthorizedError(`node token is not confirmed for audience "${TOKEN_AUDIENCE}" (TokenReview returned audiences ${JSON.stringify(status.audiences ?? [])}); check the DaemonSet's serviceAccountToken projection audience and that the API server supports audience-bound tokens`);
    }
    const username = status.user?.username ?? '';
    if (username !== this.#username) {
      throw new NotAuthorizedError(`node token belongs to ${JSON.stringify(username)}, not ${this.#username}: only the nodemesh node DaemonSet's ServiceAccount may use the control API; check the DaemonSet's serviceAccountName`);
    }
    const extra = status.user?.extra ?? {};
    const nodeName = extra[NODE_NAME_KEY]?.[0];
    if (nodeName) return nodeName;
    const podName = extra[POD_NAME_KEY]?.[0];
    if (!podName) {
      throw new NotAuthorizedError(`node token of ${username} is not bound to a pod: mount a projected serviceAccountToken volume (not a legacy Secret token) so the control plane can tell which node is calling`);
    }
    return this.#nodeOfPod(podName, extra[POD_UID_KEY]?.[0]);
  }

  /** Before Kubernetes 1.30 tokens name only their pod; its spec.nodeName is the caller's node. */
  async #nodeOfPod(podName: string, podUid: string | undefined): Promise<string> {
    const what = `pod ${this.#namespace}/${podName}`;
    let pod: PodBody;
    try {
      pod = await this.#api.get<PodBody>(`/api/v1/namespaces/${encodeURIComponent(this.#namespace)}/pods/${encodeURIComponent(podName)}`);
    } catch (err) {
      if (isStatus(err, 404)) throw new NotAuthorizedError(`node token is bound to ${what}, which no longer exists: the token is stale; the node agent must re-read its --token-file`);
      throw new NodemeshError(ErrorCode.TOKEN_REVIEW_FAILED, `cannot read ${what} to find the caller's node: ${(err as Error).message}; check the control plane's ClusterRole allows get on pods`, { cause: err });
    }
    // A pod re-created under the same name is a different pod: its token does not carry over.
    if (podUid && pod.metadata?.uid !== podUid) throw new NotAuthorizedError(`node token is bound to an earlier ${what} (uid ${podUid}): the token is stale; the node agent must re-read its --token-file`);
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) throw new NotAuthorizedError(`node token is bound to ${what}, which is not scheduled on a node (spec.nodeName empty)`);
    return nodeName;
  }
}
