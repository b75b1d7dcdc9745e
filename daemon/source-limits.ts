// Per source pod limits of the outbound side: one shared proxy serves every pod
// of its node, so one pod must not hold all of its sockets or all of its request
// slots. A source pod (the enrolled local workload whose connection 15001
// accepted, whichever listener set accepted it: the node's or the pod's own)
// holds at most `maxConnections` open connections and has at most
// `maxConcurrentRequests` HTTP requests in flight; a Pod's
// `nodemesh.io/max-connections` / `nodemesh.io/max-concurrent-requests` replace
// the node's defaults for that pod. The defaults (10,000 connections, 1,000
// requests) sit far above what one application opens through a node proxy — a
// JVM service with a few connection pools holds tens to hundreds, a busy
// frontend a few thousand — and below what it takes to exhaust the proxy
// (ulimit -n, and the 1,000-request default is the HTTP/1 and HTTP/2 work that
// keeps a node busy for seconds). Refusals are counted in
// `nodemesh_tcp_connections_denied_total{reason="source_limit"}` and logged at
// most once per pod per interval (10 s), with the number refused since. With
// several data-plane workers (workers.ts) the limits are the node's: each worker
// checks the pod's counts in every worker (pod-counts.ts). A pod the shared
// counts have no slot for is held to this worker's share of its limit.

import type net from 'node:net';
import type { Workload } from '../core/types.ts';
import type { Logger } from '../core/log.ts';
import type { DaemonMetrics } from './metrics.ts';
import { CONNECTIONS, REQUESTS } from './pod-counts.ts';
import type { CountKind, SharedPodCounts } from './pod-counts.ts';
import { workloadRef } from './tap.ts';
import type { Tap } from './tap.ts';

export const DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 10_000;
export const DEFAULT_MAX_REQUESTS_PER_SOURCE = 1_000;
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export interface SourceLimitOptions {
  /** Open connections per source pod (default 10,000). */
  maxConnections?: number;
  /** Concurrent HTTP requests per source pod (default 1,000). */
  maxConcurrentRequests?: number;
  /** The node's data-plane workers (default 1). */
  workers?: number;
  /** The counts of every worker, when there are several. */
  shared?: SharedPodCounts;
  /** At most one log line per pod and kind of refusal per this interval (default 10 s). */
  logIntervalMs?: number;
  /** The node's tap: a `refusal` event per refusal while someone listens (none is summed away). */
  tap?: Tap;
}

interface SourceCount {
  connections: number;
  requests: number;
}

/** Refusals of one pod not yet logged. */
interface PendingLog {
  refused: number;
  last: { what: string; message: string; fields: Record<string, unknown> };
  timer: NodeJS.Timeout;
}

export class SourceLimits {
  readonly maxConnections: number;
  readonly maxConcurrentRequests: number;
  readonly #metrics: DaemonMetrics;
  readonly #log: Logger;
  readonly #logIntervalMs: number;
  readonly #workers: number;
  readonly #shared: SharedPodCounts | undefined;
  /** By workload uid; an entry lives while the pod has a connection or a request open. */
  readonly #counts = new Map<string, SourceCount>();
  readonly #logs = new Map<string, PendingLog>();
  readonly #tap: Tap | undefined;

  constructor(metrics: DaemonMetrics, log: Logger, opts: SourceLimitOptions = {}) {
    this.#tap = opts.tap;
    this.#metrics = metrics;
    this.#log = log;
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS_PER_SOURCE;
    this.maxConcurrentRequests = opts.maxConcurrentRequests ?? DEFAULT_MAX_REQUESTS_PER_SOURCE;
    this.#logIntervalMs = opts.logIntervalMs ?? REFUSAL_LOG_INTERVAL_MS;
    this.#workers = opts.workers ?? 1;
    this.#shared = opts.shared;
  }

  /**
   * What the pod holds of `kind` against what it may: node-wide through the
   * shared counts (`slot` is where to count it), else what this worker holds
   * against this worker's share; and how a refusal names the limit.
   */
  #standing(uid: string, kind: CountKind, heldHere: number, limit: number): { held: number; limit: number; slot?: number; said: string } {
    const slot = this.#shared?.slotOf(uid);
    if (slot !== undefined) return { held: this.#shared!.total(slot, kind), limit, slot, said: `limit ${limit}, over ${this.#workers} workers` };
    if (this.#workers === 1) return { held: heldHere, limit, said: `limit ${limit}` };
    const share = Math.ceil(limit / this.#workers);
    return { held: heldHere, limit: share, said: `limit ${limit}, ${share} in each of ${this.#workers} workers` };
  }

  /**
   * Counts `client` against its source pod until it closes; when the pod is at
   * its limit, counts and logs the refusal and returns false (the caller resets).
   */
  admitConnection(source: Workload, sourceIdentity: string, client: net.Socket): boolean {
    const count = this.#count(source.uid);
    const { held, limit, slot, said } = this.#standing(source.uid, CONNECTIONS, count.connections, source.maxConnections ?? this.maxConnections);
    if (held >= limit) {
      this.#forget(source.uid, count);
      this.#refused(source, sourceIdentity, 'c', 'outbound connection', `source pod ${source.namespace}/${source.name} holds ${held} open connections (${said})`);
      return false;
    }
    count.connections++;
    if (slot !== undefined) this.#shared!.add(slot, CONNECTIONS, 1);
    client.on('close', () => {
      count.connections--;
      if (slot !== undefined) this.#shared!.add(slot, CONNECTIONS, -1);
      this.#forget(source.uid, count);
    });
    return true;
  }

  /**
   * Takes a request slot of the source pod: returns its release (call once, at
   * the request's end), or the refusal's reason (counted and logged) when the pod
   * is at its limit.
   */
  startRequest(source: Workload, sourceIdentity: string): (() => void) | string {
    const count = this.#count(source.uid);
    const { held, limit, slot, said } = this.#standing(source.uid, REQUESTS, count.requests, source.maxConcurrentRequests ?? this.maxConcurrentRequests);
    if (held >= limit) {
      this.#forget(source.uid, count);
      const reason = `source pod ${source.namespace}/${source.name} has ${held} HTTP requests in flight (${said})`;
      this.#refused(source, sourceIdentity, 'r', 'HTTP request', reason);
      return reason;
    }
    count.requests++;
    if (slot !== undefined) this.#shared!.add(slot, REQUESTS, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      count.requests--;
      if (slot !== undefined) this.#shared!.add(slot, REQUESTS, -1);
      this.#forget(source.uid, count);
    };
  }

  /** What a source pod holds now (tests, /explain). */
  usage(uid: string): { connections: number; requests: number } {
    const c = this.#counts.get(uid);
    return { connections: c?.connections ?? 0, requests: c?.requests ?? 0 };
  }

  /** Pending log lines are written now; no timers stay behind. */
  close(): void {
    for (const key of [...this.#logs.keys()]) this.#flush(key, false);
  }

  #count(uid: string): SourceCount {
    let c = this.#counts.get(uid);
    if (!c) this.#counts.set(uid, (c = { connections: 0, requests: 0 }));
    return c;
  }

  #forget(uid: string, c: SourceCount): void {
    if (c.connections === 0 && c.requests === 0 && this.#counts.get(uid) === c) this.#counts.delete(uid);
  }

  #refused(source: Workload, sourceIdentity: string, kind: 'c' | 'r', what: string, message: string): void {
    this.#metrics.tcpDenied.inc({
      reporter: 'source', destination_workload: 'unknown', destination_workload_namespace: 'unknown',
      source_principal: sourceIdentity, reason: 'source_limit',
    });
    if (this.#tap?.active) {
      this.#tap.publish({
        event: 'refusal', reporter: 'source', what, reason: 'source_limit', message,
        source: { ip: source.ip, workload: workloadRef(source), identity: sourceIdentity },
      });
    }
    const key = `${kind}:${source.uid}`;
    const fields = { source: sourceIdentity, sourceIp: source.ip, pod: `${source.namespace}/${source.name}`, reason: 'source_limit' };
    const pending = this.#logs.get(key);
    if (pending) {
      pending.refused++;
      pending.last = { what, message, fields };
      return;
    }
    // The first refusal of a quiet pod is logged at once; the rest of the interval is summed.
    this.#log.warn(`${what} refused: ${message}`, fields);
    this.#arm(key, { what, message, fields });
  }

  #arm(key: string, last: PendingLog['last']): void {
    const timer = setTimeout(() => this.#flush(key, true), this.#logIntervalMs);
    timer.unref();
    this.#logs.set(key, { refused: 0, last, timer });
  }

  /** Logs what the interval refused; keeps the window open while refusals go on. */
  #flush(key: string, rearm: boolean): void {
    const pending = this.#logs.get(key);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.#logs.delete(key);
    if (pending.refused === 0) return;
    const { what, message, fields } = pending.last;
    this.#log.warn(`${what} refused ${pending.refused} more times in the last ${Math.round(this.#logIntervalMs / 1000)} s: ${message}`, { ...fields, refused: pending.refused });
    if (rearm) this.#arm(key, pending.last);
  }
}
