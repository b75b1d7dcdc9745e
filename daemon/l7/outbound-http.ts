// HTTP on the outbound side as one unit: the request router (routes, backends,
// endpoints), the peak-EWMA balancer and the retry budget that HTTP/1 and HTTP/2
// share, and the handler of each protocol. The outbound listener picks the
// handler where it detects the protocol.

import type { ConfigStore } from '../config-store.ts';
import type { Admission } from '../admission.ts';
import type { DaemonMetrics } from '../metrics.ts';
import type { HbonePool } from '../hbone-pool.ts';
import type { Tap } from '../tap.ts';
import type { Tracing } from '../tracing.ts';
import { PodDialer } from '../pod-dialer.ts';
import { PeakEwmaBalancer } from './peak-ewma.ts';
import { RetryBudget } from './retry-budget.ts';
import { RequestRouter } from './request-router.ts';
import { H1Outbound } from './h1-outbound.ts';
import { H2Outbound } from './h2-outbound.ts';
import type { SourceLimits } from '../source-limits.ts';

export interface OutboundHttpOptions {
  config: ConfigStore;
  pool: HbonePool;
  admission: Admission;
  metrics: DaemonMetrics;
  /** Upstream statuses retried (default 503: the server says it did not process the request). */
  retryStatuses?: number[];
  /** Attempts per request including the first (default 3). */
  maxAttempts?: number;
  budget?: RetryBudget;
  balancer?: PeakEwmaBalancer;
  /** Reaches pods on this node. */
  dialer?: PodDialer;
  /** The node's tap, for `request` events. */
  tap?: Tap;
  /** Trace context and spans per request. */
  tracing?: Tracing;
  /** Concurrent requests per source pod; without it, unbounded. */
  limits?: SourceLimits;
}

export interface OutboundHttp {
  http1: H1Outbound;
  http2: H2Outbound;
  /** Clients move to the next daemon: HTTP/1 `connection: close`, HTTP/2 GOAWAY. */
  drain(): void;
  /** Closes pooled upstream connections. */
  close(): void;
}

export function createOutboundHttp(opts: OutboundHttpOptions): OutboundHttp {
  const { config, metrics } = opts;
  const router = new RequestRouter(config, opts.pool, opts.admission, opts.balancer ?? new PeakEwmaBalancer(), opts.dialer ?? new PodDialer());
  const http1 = new H1Outbound({
    config, metrics, router, budget: opts.budget ?? new RetryBudget(),
    retryStatuses: new Set(opts.retryStatuses ?? [503]), maxAttempts: opts.maxAttempts ?? 3, tap: opts.tap, tracing: opts.tracing, limits: opts.limits,
  });
  const http2 = new H2Outbound({ config, metrics, router, tap: opts.tap, tracing: opts.tracing, limits: opts.limits });
  return {
    http1,
    http2,
    drain() {
      http1.drain();
      http2.drain();
    },
    close() {
      http2.close();
      http1.close();
    },
  };
}
