// The operator commands' way to a node's admin API: straight to HOST:PORT
// (`--admin`, several comma-separated), or in a cluster through the Kubernetes
// API, a port-forward to the node's nodemesh-node pod (`--node NAME`, or every
// node when neither is given; kube-forward.ts). A node that cannot be reached,
// or answers with an error, is a NodemeshError naming the node and what to
// check, so the command exits 1 with it.

import { isIP } from 'node:net';
import { WebSocket } from 'ws';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { UsageError } from './args.ts';

/** One node's admin API, reachable at `base` until `close()`. */
export interface AdminTarget {
  /** The node's name when known (Kubernetes), else the address asked. */
  label: string;
  /** host:port of the admin API (a local port-forward in Kubernetes mode). */
  address: string;
  close(): Promise<void>;
}

const REQUEST_TIMEOUT_MS = 10_000;

/** `--admin` values: host:port, host a name or IPv4 or [IPv6], port 1-65535; comma-separated. */
export function parseAdminList(command: string, value: string): string[] {
  const list = value.split(',').map((a) => a.trim());
  for (const addr of list) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/.exec(addr);
    const host = m?.[1]?.startsWith('[') ? m[1].slice(1, -1) : m?.[1];
    const port = Number(m?.[2]);
    const hostOk = host !== undefined && (m![1]!.startsWith('[') ? isIP(host) === 6 : isIP(host) === 4 || /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(host));
    if (!m || !hostOk || port < 1 || port > 65535) {
      throw new UsageError(`nodemesh ${command}: --admin: ${JSON.stringify(addr.slice(0, 80))} is not HOST:PORT (e.g. 127.0.0.1:15000)`);
    }
  }
  return list;
}

/** Targets at these addresses, each named by the node's own answer at `/` (its address if it does not answer). */
export async function directTargets(addresses: string[]): Promise<AdminTarget[]> {
  return Promise.all(addresses.map(async (address) => {
    const target: AdminTarget = { label: address, address, close: async () => {} };
    try {
      const { node } = await adminRequest<{ node?: unknown }>(target, '/');
      if (typeof node === 'string' && /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(node)) target.label = node;
    } catch { /* the command's own request reports it */ }
    return target;
  }));
}

export class AdminUnreachableError extends NodemeshError {
  constructor(target: AdminTarget, cause: unknown) {
    super(ErrorCode.ADMIN_UNREACHABLE, `node ${target.label}: cannot reach the admin API at ${target.address}: ${causeOf(cause)}; is the node running, and is that its --admin-addr? (in a cluster, --node NAME reaches it through the Kubernetes API)`, { cause });
  }
}

export class AdminAnswerError extends NodemeshError {
  readonly status: number;
  constructor(target: AdminTarget, path: string, status: number, message: string) {
    super(ErrorCode.ADMIN_ANSWER, `node ${target.label}: ${path} answered ${status}: ${message}`);
    this.status = status;
  }
}

function causeOf(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; message?: string; name?: string };
  if (e?.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** A request to one node's admin API; JSON in, JSON out. */
export async function adminRequest<T>(target: AdminTarget, path: string, method: 'GET' | 'POST' = 'GET'): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`http://${target.address}${path}`, { method, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    throw new AdminUnreachableError(target, err);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new AdminAnswerError(target, path, res.status, `not JSON: ${JSON.stringify(text.slice(0, 200))}`);
  }
  if (!res.ok) throw new AdminAnswerError(target, path, res.status, String((body as { error?: unknown })?.error ?? text.slice(0, 200)));
  return body as T;
}

export interface TapStream {
  /** Resolves when the stream ends: by `close()`, or by the node (rejects then). */
  done: Promise<void>;
  close(): void;
}

/** Subscribes to `/tap?query` of a node; each event is handed to `onEvent`. */
export function openTap(target: AdminTarget, query: URLSearchParams, onEvent: (event: Record<string, unknown>) => void): Promise<TapStream> {
  const q = query.toString();
  const ws = new WebSocket(`ws://${target.address}/tap${q ? `?${q}` : ''}`, { handshakeTimeout: REQUEST_TIMEOUT_MS, maxPayload: 1 << 20 });
  let closing = false;
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d));
      res.on('end', () => {
        let message = body.trim();
        try {
          message = String((JSON.parse(body) as { error?: unknown }).error ?? message);
        } catch { /* a plain-text answer */ }
        reject(new AdminAnswerError(target, '/tap', res.statusCode ?? 0, message));
      });
    });
    ws.once('error', (err) => reject(new AdminUnreachableError(target, err)));
    ws.once('open', () => {
      const done = new Promise<void>((ok, fail) => {
        ws.on('error', (err) => fail(new AdminUnreachableError(target, err)));
        ws.on('close', () => (closing ? ok() : fail(new NodemeshError(ErrorCode.ADMIN_UNREACHABLE, `node ${target.label}: the tap closed (node stopped or restarted?)`))));
      });
      ws.on('message', (data) => {
        let event: unknown;
        try {
          event = JSON.parse(String(data));
        } catch {
          return;
        }
        if (event && typeof event === 'object' && !Array.isArray(event)) onEvent(event as Record<string, unknown>);
      });
      resolve({
        done,
        close: () => {
          closing = true;
          ws.close();
        },
      });
    });
  });
}
