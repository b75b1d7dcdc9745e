// Plain JSON requests to the Kubernetes API server, authenticated and TLS-configured
// from a KubeConfig. The typed clients of @kubernetes/client-node convert objects
// into model classes (dates become Date, unknown fields vanish); the mesh model
// wants objects exactly as the API server sent them, as the file source gives them.

import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { ErrorCode, NodemeshError } from '../core/errors.ts';

/** The API server answered with a non-2xx status; `reason` is the Status reason (NotFound, AlreadyExists, ...). */
export class KubeApiError extends NodemeshError {
  readonly status: number;
  readonly reason: string;
  constructor(method: string, path: string, status: number, reason: string, detail: string) {
    super(ErrorCode.KUBE_API, `Kubernetes API ${method} ${path}: ${status} ${reason}${detail ? `: ${detail}` : ''}`);
    this.status = status;
    this.reason = reason;
  }
}

export function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
}

const REQUEST_TIMEOUT_MS = 30_000;

export class KubeApi {
  readonly config: KubeConfig;

  constructor(config: KubeConfig) {
    this.config = config;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  /** A JSON merge patch (RFC 7386), e.g. of a status subresource. */
  mergePatch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body, undefined, 'application/merge-patch+json');
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal, contentType = 'application/json'): Promise<T> {
    const cluster = this.config.getCurrentCluster();
    if (!cluster) throw new NodemeshError(ErrorCode.KUBE_CONFIG, 'kubeconfig has no current cluster: check the current-context of the kubeconfig, or run inside a pod');
    const url = new URL(cluster.server.replace(/\/$/, '') + path);
    const options: https.RequestOptions = { method, headers: { accept: 'application/json' }, timeout: REQUEST_TIMEOUT_MS, signal };
    await this.config.applyToHTTPSOptions(options);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) Object.assign(options.headers!, { 'content-type': contentType, 'content-length': String(payload.length) });
    const send = url.protocol === 'https:' ? https.request : http.request;
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = send(url, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new NodemeshError(ErrorCode.KUBE_API, `Kubernetes API ${method} ${path}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s from ${cluster.server}`)));
      req.on('error', reject);
      req.end(payload);
    });
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (status < 200 || status > 299) {
      const st = (parsed ?? {}) as { reason?: string; message?: string };
      throw new KubeApiError(method, path, status, st.reason || http.STATUS_CODES[status] || 'Error', st.message ?? text.slice(0, 200));
    }
    if (parsed === undefined) throw new KubeApiError(method, path, status, 'BadResponse', 'the answer is not JSON');
    return parsed as T;
  }
}
