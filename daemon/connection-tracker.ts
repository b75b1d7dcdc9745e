// Every proxied connection, from open to close: what it was authorized with,
// its metrics labels and byte counts, the access log lines at open and close,
// and the re-check of destination-side connections after each config change.
// Identities are written as every other answer, log and metric writes them: the
// SPIFFE ID (`spiffe://cluster.local/ns/x/sa/y`), under `identity`.

import type { Service, Workload } from '../core/types.ts';
import { logger } from '../core/log.ts';
import type { AuthorizationInput, Decision } from './authorization.ts';
import { endsOf, peerLabels } from './metrics.ts';
import type { DaemonMetrics, TcpLabels } from './metrics.ts';
import { Tap } from './tap.ts';
import type { TapEvent, TapFilter, TapListener } from './tap.ts';

export type { TapEvent, TapListener } from './tap.ts';

const access = logger('access');

export type Listener = 'outbound' | 'inbound' | 'inbound-plaintext' | 'same-node';

export interface ConnectionInfo {
  listener: Listener;
  reporter: 'source' | 'destination';
  sourceIp: string;
  sourceWorkload?: Workload;
  sourcePrincipal: string | null;
  destinationIp: string;
  destinationPort: number;
  destinationWorkload?: Workload;
  destinationPrincipal: string | null;
  service?: Service;
  security: 'mutual_tls' | 'none';
  /** Set on destination-side connections: re-checked after every config change. */
  authorization?: AuthorizationInput;
  /** Live byte counts, read from the sockets: received from / sent to the source. */
  bytes(): { received: number; sent: number };
  /** Tears the connection down (both sides). */
  destroy(): void;
}

export interface TrackedConnection {
  readonly id: number;
  /** Records the close (metrics, access log); idempotent. */
  finish(error?: Error): void;
}

interface Entry {
  id: number;
  info: ConnectionInfo;
  labels: TcpLabels;
  startedAt: number;
  closeReason?: string;
}

/** Finds the Service of a destination-side connection, which the tunnel does not carry. */
export type ServiceResolver = (workload: Workload, port: number) => Service | undefined;

export class ConnectionTracker {
  readonly #metrics: DaemonMetrics;
  readonly #serviceOf: ServiceResolver;
  readonly #entries = new Map<number, Entry>();
  /** The node's tap: connection events from here, refusals and requests from their record points. */
  readonly tap: Tap;
  readonly #drained: (() => void)[] = [];
  #nextId = 1;

  constructor(metrics: DaemonMetrics, serviceOf: ServiceResolver = () => undefined, tap = new Tap()) {
    this.#metrics = metrics;
    this.#serviceOf = serviceOf;
    this.tap = tap;
  }

  get size(): number {
    return this.#entries.size;
  }

  open(info: ConnectionInfo): TrackedConnection {
    if (!info.service && info.reporter === 'destination' && info.destinationWorkload) {
      info = { ...info, service: this.#serviceOf(info.destinationWorkload, info.destinationPort) };
    }
    const entry: Entry = { id: this.#nextId++, info, labels: peerLabels(info), startedAt: Date.now() };
    this.#entries.set(entry.id, entry);
    this.#metrics.tcpOpened.inc(entry.labels);
    const opened = describe(entry);
    access.info('open', opened);
    this.#tap('open', opened);
    return { id: entry.id, finish: (error) => this.#finish(entry, error) };
  }

  #finish(entry: Entry, error?: Error): void {
    if (!this.#entries.delete(entry.id)) return;
    const { received, sent } = entry.info.bytes();
    this.#metrics.tcpClosed.inc(entry.labels);
    if (received) this.#metrics.tcpReceived.inc(entry.labels, received);
    if (sent) this.#metrics.tcpSent.inc(entry.labels, sent);
    const closed = {
      ...describe(entry),
      durationMs: Date.now() - entry.startedAt,
      reason: entry.closeReason ?? (error ? `error: ${error.message}` : 'closed'),
    };
    access.info('close', closed);
    this.#tap('close', closed);
    if (this.#entries.size === 0) this.#drained.splice(0).forEach((resolve) => resolve());
  }

  /** Streams the tap's events that `filter` lets through to `listener` until the returned function is called. */
  subscribe(listener: TapListener, filter?: TapFilter): () => void {
    return this.tap.subscribe(listener, filter);
  }

  #tap(event: TapEvent['event'], fields: Record<string, unknown>): void {
    if (this.tap.active) this.tap.publish({ event, ...fields });
  }

  /** For the admin API (/connections). */
  list(): object[] {
    return [...this.#entries.values()].map((e) => ({ ...describe(e), durationMs: Date.now() - e.startedAt }));
  }

  /** Re-runs `check` on destination-side connections and closes those it no longer allows. */
  reauthorize(check: (input: AuthorizationInput) => Decision): void {
    for (const entry of this.#entries.values()) {
      const input = entry.info.authorization;
      if (!input) continue;
      const decision = check(input);
      if (decision.allowed) continue;
      entry.closeReason = `no longer allowed after a config change: ${decision.reason}`;
      if (this.tap.active) {
        const { source, destination } = describe(entry) as Pick<TapEvent, 'source' | 'destination'>;
        this.tap.publish({
          event: 'refusal', reporter: entry.info.reporter, what: 'open connection', reason: 'policy_changed', message: entry.closeReason,
          ...(decision.policy ? { policy: decision.policy } : {}), source, destination,
        });
      }
      this.#metrics.tcpDenied.inc({
        reporter: entry.info.reporter,
        destination_workload: entry.labels.destination_workload,
        destination_workload_namespace: entry.labels.destination_workload_namespace,
        source_principal: entry.labels.source_principal,
        reason: 'policy_changed',
      });
      entry.info.destroy();
    }
  }

  /**
   * Drops the metric series of workloads that left the config (`live`: the ends
   * it names, `liveEnds`) past the grace period, keeping those an open
   * connection still uses. Returns how many label sets went.
   */
  dropDepartedSeries(live: ReadonlySet<string>, now = Date.now()): Promise<number> {
    const inUse = new Set<string>();
    for (const entry of this.#entries.values()) for (const end of endsOf(entry.labels)) inUse.add(end);
    return this.#metrics.series.sweep(live, inUse, now);
  }

  /** Resolves when no connection is open any more. */
  idle(): Promise<void> {
    if (this.#entries.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  /** Whether every connection closed within `ms`. */
  async idleWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.idle().then(() => true as const), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Tears down every open connection, recording `reason` in its close log line. */
  destroyAll(reason: string): void {
    for (const entry of [...this.#entries.values()]) {
      entry.closeReason = reason;
      entry.info.destroy();
    }
  }

  /**
   * destroyAll, then waits up to `graceMs` for the closes. A connection whose
   * close has not come by then is recorded closed here, its log line saying so,
   * and forgotten: a drain's deadline must end the drain. Seen on the routed
   * profile with two workers: after the deadline a daemon's last tunnel never
   * reported its close, and the daemon never exited. Returns how many were.
   */
  async closeAll(reason: string, graceMs: number): Promise<number> {
    this.destroyAll(reason);
    if (await this.idleWithin(graceMs)) return 0;
    const stuck = [...this.#entries.values()];
    for (const entry of stuck) {
      entry.closeReason = `${reason}; its close did not come within ${graceMs} ms`;
      this.#finish(entry);
    }
    return stuck.length;
  }
}

function describe(e: Entry): Record<string, unknown> {
  const { info } = e;
  const { received, sent } = info.bytes();
  return {
    id: e.id,
    listener: info.listener,
    reporter: info.reporter,
    source: {
      ip: info.sourceIp,
      workload: info.sourceWorkload ? `${info.sourceWorkload.namespace}/${info.sourceWorkload.name}` : null,
      identity: info.sourcePrincipal,
    },
    destination: {
      ip: info.destinationIp,
      port: info.destinationPort,
      workload: info.destinationWorkload ? `${info.destinationWorkload.namespace}/${info.destinationWorkload.name}` : null,
      identity: info.destinationPrincipal,
      service: info.service ? `${info.service.namespace}/${info.service.name}` : null,
    },
    security: info.security,
    startedAt: new Date(e.startedAt).toISOString(),
    bytesReceived: received,
    bytesSent: sent,
  };
}
