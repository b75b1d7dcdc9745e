// The data plane of one node: the outbound, inbound plaintext and HBONE
// listeners, the HBONE client pool, load balancing, connection tracking and
// metrics, wired to the node's config and certificates.

import type { Registry } from 'prom-client';
import type { CertSource } from '../core/cert-source.ts';
import type { ConfigStore } from './config-store.ts';
import { logger } from '../core/log.ts';
import { createMetrics } from './metrics.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { LoadBalancer } from './load-balancer.ts';
import { HbonePool } from './hbone-pool.ts';
import { HBONE_PORT } from './hbone-settings.ts';
import { Admission, decide } from './admission.ts';
import { OutboundListener } from './outbound.ts';
import { InboundPlaintextListener } from './inbound-plaintext.ts';
import { InboundListener } from './inbound.ts';
import { createOutboundHttp } from './l7/outbound-http.ts';
import { HttpInbound } from './l7/http-inbound.ts';
import { explain } from './explain.ts';
import { serviceServing } from './destination.ts';
import type { ExplainQuery, Explanation } from './explain.ts';
import type { TapListener } from './connection-tracker.ts';

const log = logger('daemon');

export interface DaemonOptions {
  config: ConfigStore;
  certs: CertSource;
  registry: Registry;
  /** Default 0.0.0.0. */
  bindHost?: string;
  /** Listener ports; defaults 15001, 15006, 15008; 0 picks a free port (tests). */
  ports?: { outbound?: number; inboundPlaintext?: number; inbound?: number };
  /** Port dialled on peer pod IPs for HBONE; 15008 except in tests. */
  peerHbonePort?: number;
  /** Limits of the HBONE listener (15008); defaults in hbone-settings.ts. */
  hbone?: {
    /** From accept to the peer's first HTTP/2 SETTINGS (default 10 s). */
    handshakeTimeoutMs?: number;
    /** Open tunnel streams per peer identity on a peer node (default 10,000). */
    maxStreamsPerPeer?: number;
  };
  /** HTTP handling knobs; defaults suit most meshes. */
  http?: {
    /** How long an undeclared port waits for the client's first bytes (default 100 ms, see l7/detect.ts). */
    detectTimeoutMs?: number;
    /** Upstream statuses retried within the retry budget (default [503]). */
    retryStatuses?: number[];
    /** Attempts per request, the first included (default 3). */
    maxAttempts?: number;
  };
}

export interface Daemon {
  ports: { outbound: number; inboundPlaintext: number; inbound: number };
  /** Open connections, for the admin API. */
  connections(): object[];
  /** What would happen to a connection, for the admin API's /explain. */
  explain(query: ExplainQuery): Explanation;
  /** Connection open/close events, for the admin API's /tap; returns the unsubscribe. */
  tap(listener: TapListener): () => void;
  /** Stops accepting, lets open connections finish until the deadline, then closes the rest. */
  drain(deadlineMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { config, certs } = opts;
  const host = opts.bindHost ?? '0.0.0.0';
  const metrics = createMetrics(opts.registry);
  const tracker = new ConnectionTracker(metrics, (workload, port) => serviceServing(config, workload, port));
  const balancer = new LoadBalancer();
  const pool = new HbonePool({ certs, port: opts.peerHbonePort ?? HBONE_PORT });
  const admission = new Admission(config, metrics);
  const http = createOutboundHttp({ config, pool, admission, metrics, retryStatuses: opts.http?.retryStatuses, maxAttempts: opts.http?.maxAttempts });
  const httpInbound = new HttpInbound(admission, metrics);
  const bound: { close(): void }[] = [];
  let outbound: OutboundListener;
  let inboundPlaintext: InboundPlaintextListener;
  let inbound: InboundListener;
  try {
    outbound = await OutboundListener.bind({ config, tracker, admission, pool, balancer, http, detectTimeoutMs: opts.http?.detectTimeoutMs, host, port: opts.ports?.outbound ?? 15001 });
    bound.push(outbound);
    inboundPlaintext = await InboundPlaintextListener.bind({ config, tracker, admission, balancer, http: httpInbound, host, port: opts.ports?.inboundPlaintext ?? 15006 });
    bound.push(inboundPlaintext);
    inbound = await InboundListener.bind({ config, certs, tracker, admission, http: httpInbound, host, port: opts.ports?.inbound ?? HBONE_PORT, ...opts.hbone });
    bound.push(inbound);
  } catch (err) {
    bound.forEach((l) => l.close());
    throw err;
  }
  const listeners = [outbound, inboundPlaintext, inbound];

  // The store and the cert source have no unsubscribe: the handlers check `stopped`.
  let stopped = false;
  config.onChange(() => {
    if (!stopped) tracker.reauthorize((input) => decide(config, input));
  });
  certs.onChange(() => {
    if (stopped) return;
    pool.certsChanged();
    inbound.certsChanged();
  });
  const ports = { outbound: outbound.port, inboundPlaintext: inboundPlaintext.port, inbound: inbound.port };
  log.info('data plane listening', { host, ...ports });

  return {
    ports,
    connections: () => tracker.list(),
    explain: (query) => explain(config, query),
    tap: (listener) => tracker.subscribe(listener),
    async drain(deadlineMs: number) {
      listeners.forEach((l) => l.stopAccepting());
      pool.close();
      log.info('draining connections', { open: tracker.size, deadlineMs });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), deadlineMs)));
      const outcome = await Promise.race([tracker.idle().then(() => 'idle' as const), deadline]);
      clearTimeout(timer);
      if (outcome === 'deadline') {
        log.warn('drain deadline reached: closing the remaining connections', { open: tracker.size });
        tracker.destroyAll('drain deadline reached');
        await tracker.idle();
      }
    },
    async stop() {
      stopped = true;
      listeners.forEach((l) => l.close());
      tracker.destroyAll('data plane stopped');
      http.close();
      pool.destroy();
    },
  };
}
