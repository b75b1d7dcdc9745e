// The data plane of one node: the outbound, inbound plaintext and HBONE
// listeners, the HBONE client pool, load balancing, connection tracking and
// metrics, wired to the node's config and certificates. The three listeners
// exist once on the node's addresses (for pods captured from the node's
// namespace) and once inside the namespace of each pod captured in-pod
// (attachPod): the same listeners, serving sockets made in the pod.

import { closeSync } from 'node:fs';
import type { Registry } from 'prom-client';
import type { CertSource } from '../core/cert-source.ts';
import type { ConfigStore } from './config-store.ts';
import { logger } from '../core/log.ts';
import { createMetrics, liveEnds } from './metrics.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { LoadBalancer } from './load-balancer.ts';
import { HbonePool } from './hbone-pool.ts';
import { HBONE_PORT } from './hbone-settings.ts';
import { Admission, decide } from './admission.ts';
import { OutboundListener } from './outbound.ts';
import { InboundPlaintextListener } from './inbound-plaintext.ts';
import { InboundListener } from './inbound.ts';
import { createOutboundHttp } from './l7/outbound-http.ts';
import { PodDialer } from './pod-dialer.ts';
import { listenInNetns } from './pod-socket.ts';
import { SUCCESSOR_WAIT_MS, enableRequestMigration, handOver } from './handover.ts';
import type { HeldListener } from './handover.ts';
import type { SharedPodCounts } from './pod-counts.ts';
import { unmapIpv4 } from './authorization.ts';
import { HttpInbound } from './l7/http-inbound.ts';
import { explain } from './explain.ts';
import { serviceServing } from './destination.ts';
import { SourceLimits } from './source-limits.ts';
import { CpuPressure } from './cpu-pressure.ts';
import { FairShare } from './fair-share.ts';
import type { ExplainQuery, Explanation } from './explain.ts';
import type { TapListener } from './connection-tracker.ts';
import type { TapFilter } from './tap.ts';
import type { Tracing } from './tracing.ts';

const log = logger('daemon');
/** The listeners made in each in-pod-captured pod's namespace, in bindListeners' order. */
/** How long connections closed at the drain deadline get to report their close before the daemon stops without them. */
const CLOSE_GRACE_MS = 1000;
const POD_LISTENERS = [[15001, 'outbound listener'], [15006, 'inbound plaintext listener'], [HBONE_PORT, 'inbound HBONE listener']] as const;

export interface DaemonOptions {
  config: ConfigStore;
  certs: CertSource;
  registry: Registry;
  /** Default 0.0.0.0. */
  bindHost?: string;
  /** Listener ports; defaults 15001, 15006, 15008; 0 picks a free port (tests). */
  ports?: { outbound?: number; inboundPlaintext?: number; inbound?: number };
  /**
   * Sets net.ipv4.tcp_migrate_req in the node's and each captured pod's namespace,
   * so a listener closed during a handover passes its queued connections on (a
   * node setting: the node agent sets it, tests in the machine's namespace do not).
   */
  migrateQueuedConnections?: boolean;
  /** Port dialled on peer pod IPs for HBONE; 15008 except in tests. */
  peerHbonePort?: number;
  /** Limits of the HBONE listener (15008); defaults in hbone-settings.ts. */
  hbone?: {
    /** From accept to the peer's first HTTP/2 SETTINGS (default 10 s). */
    handshakeTimeoutMs?: number;
    /** An accepted session with no open stream is closed (GOAWAY) after this long (default 2 min). */
    idleTimeoutMs?: number;
    /** Open tunnel streams per peer identity on a peer node (default 10,000). */
    maxStreamsPerPeer?: number;
  };
  /** How long the metric series of a workload that left stay (default 5 min, metrics.ts). */
  seriesGraceMs?: number;
  /** Per source pod limits of the outbound side (source-limits.ts); a Pod's annotations override them. */
  sourceLimits?: {
    /** Open connections per source pod (default 10,000). */
    maxConnections?: number;
    /** Concurrent HTTP requests per source pod (default 1,000). */
    maxConcurrentRequests?: number;
    /** The node's data-plane workers (default 1). */
    workers?: number;
    /** Every worker's counts per pod (pod-counts.ts), so the limits are the node's. */
    shared?: SharedPodCounts;
  };
  /** Which data-plane worker this is (workers.ts; 0: the main thread's), shown on each connection. */
  worker?: number;
  /** Trace context, x-request-id and request spans (tracing.ts); none without it. */
  tracing?: Tracing;
  /** HTTP handling knobs; defaults suit most meshes. */
  http?: {
    /** How long an undeclared port waits for the client's first bytes (default 100 ms, see l7/detect.ts). */
    detectTimeoutMs?: number;
    /** Upstream statuses retried within the retry budget (default [503]). */
    retryStatuses?: number[];
    /** Attempts per request, the first included (default 3). */
    maxAttempts?: number;
    /** Count meshed clients' requests on the destination node too (l7/http-inbound.ts); default off. */
    destinationRequestMetrics?: boolean;
  };
}

export interface Daemon {
  ports: { outbound: number; inboundPlaintext: number; inbound: number };
  /** Open connections, for the admin API. */
  connections(): object[];
  /** What would happen to a connection, for the admin API's /explain. */
  explain(query: ExplainQuery): Explanation;
  /** Connection open/close events, for the admin API's /tap; returns the unsubscribe. */
  tap(listener: TapListener, filter?: TapFilter): () => void;
  /**
   * Serves a pod captured inside its own network namespace: binds the three
   * listeners there and delivers to it from there. Rejects (BindError, NM_NETNS,
   * NM_POD_SOCKET) when that cannot be done; the caller must not capture it then.
   */
  attachPod(podIp: string, netnsPath: string): Promise<void>;
  /** Stops accepting in a pod's namespace; connections already open run on. */
  detachPod(podIp: string): void;
  /** The pods served in their own namespace, by IP. */
  attachedPods(): Map<string, string>;
  /** Hands the listeners over (handover.ts), then drains (drainConnections). */
  drain(deadlineMs: number, successorWaitMs?: number): Promise<void>;
  /** Every listening socket, on the node and in each pod's namespace, for the handover. */
  heldListeners(): HeldListener[];
  /** Stops accepting, lets open connections finish until the deadline, then closes the rest. */
  drainConnections(deadlineMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { config, certs } = opts;
  const host = opts.bindHost ?? '0.0.0.0';
  const metrics = createMetrics(opts.registry, { seriesGraceMs: opts.seriesGraceMs });
  const tracker = new ConnectionTracker(metrics, (workload, port) => serviceServing(config, workload, port));
  const balancer = new LoadBalancer();
  const pool = new HbonePool({ certs, port: opts.peerHbonePort ?? HBONE_PORT });
  const admission = new Admission(config, metrics, tracker.tap);
  const dialer = new PodDialer();
  // Shared by every listener set: a pod's count is the same whichever set accepted it.
  const limits = new SourceLimits(metrics, logger('outbound'), { ...opts.sourceLimits, tap: tracker.tap });
  const cpuPressure = CpuPressure.open();
  const fairShare = new FairShare({ registry: opts.registry, cpuPressure });
  fairShare.start();
  const http = createOutboundHttp({ config, pool, admission, metrics, dialer, tap: tracker.tap, tracing: opts.tracing, limits, retryStatuses: opts.http?.retryStatuses, maxAttempts: opts.http?.maxAttempts });
  const httpInbound = new HttpInbound(admission, metrics, {
    dialer, tap: tracker.tap, tracing: opts.tracing, fairShare, requestMetrics: opts.http?.destinationRequestMetrics,
  });
  // fairShare too: the inbound listeners weigh their sources as the outbound one does.
  const shared = { config, tracker, admission, dialer, fairShare };

  /** The three listeners, on host ports or on sockets made inside a pod's namespace. */
  const bindListeners = async (at: { host: string; outbound: number; inboundPlaintext: number; inbound: number; fds?: number[] }): Promise<ListenerSet> => {
    const bound: { close(): void }[] = [];
    try {
      const outbound = await OutboundListener.bind({ ...shared, pool, balancer, http, limits, detectTimeoutMs: opts.http?.detectTimeoutMs, host: at.host, port: at.outbound, fd: at.fds?.[0] });
      bound.push(outbound);
      const inboundPlaintext = await InboundPlaintextListener.bind({ ...shared, balancer, http: httpInbound, host: at.host, port: at.inboundPlaintext, fd: at.fds?.[1] });
      bound.push(inboundPlaintext);
      const inbound = await InboundListener.bind({
        ...shared, certs, http: httpInbound, host: at.host, port: at.inbound, fd: at.fds?.[2], ...opts.hbone,
        // In a pod's namespace HBONE arrives at the pod's own address, not redirected.
        destinationOf: at.fds ? (socket) => ({ ip: unmapIpv4(socket.localAddress ?? ''), port: socket.localPort ?? 0 }) : undefined,
      });
      bound.push(inbound);
      return { outbound, inboundPlaintext, inbound, all: [outbound, inboundPlaintext, inbound] };
    } catch (err) {
      bound.forEach((l) => l.close());
      throw err;
    }
  };
  const node = await bindListeners({
    host, outbound: opts.ports?.outbound ?? 15001, inboundPlaintext: opts.ports?.inboundPlaintext ?? 15006, inbound: opts.ports?.inbound ?? HBONE_PORT,
  });
  const pods = new Map<string, { netns: string; listeners: ListenerSet }>();
  const everySet = () => [node, ...[...pods.values()].map((p) => p.listeners)];

  // The store and the cert source have no unsubscribe: the handlers check `stopped`.
  let stopped = false;
  config.onChange(() => {
    if (!stopped) tracker.reauthorize((input) => decide(config, input));
  });
  // Departed workloads' series go between one and 1.5 grace periods after they left.
  const sweep = setInterval(() => {
    tracker.dropDepartedSeries(liveEnds(config.workloads(), (w) => config.identityOf(w))).catch((err: unknown) => log.warn('could not drop the metric series of departed workloads', { error: String(err) }));
  }, Math.max(1_000, metrics.series.graceMs / 2));
  sweep.unref();
  certs.onChange(() => {
    if (stopped) return;
    pool.certsChanged();
    for (const set of everySet()) set.inbound.certsChanged();
  });
  if (opts.migrateQueuedConnections) enableRequestMigration();
  const ports = { outbound: node.outbound.port, inboundPlaintext: node.inboundPlaintext.port, inbound: node.inbound.port };
  log.info('data plane listening', { host, ...ports });

  const detachPod = (podIp: string) => {
    const pod = pods.get(podIp);
    if (!pod) return;
    pods.delete(podIp);
    dialer.unregister(podIp);
    pod.listeners.all.forEach((l) => l.stopAccepting());
    log.info('stopped serving a pod namespace', { podIp, netns: pod.netns });
  };

  const daemon: Daemon = {
    ports,
    connections: () => (opts.worker === undefined ? tracker.list() : tracker.list().map((c) => ({ ...c, worker: opts.worker }))),
    explain: (query) => explain(config, query),
    tap: (listener, filter) => tracker.subscribe(listener, filter),
    async attachPod(podIp: string, netnsPath: string) {
      if (pods.get(podIp)?.netns === netnsPath) return;
      // A recreated pod that got the IP back lives in a new namespace.
      detachPod(podIp);
      const fds: number[] = [];
      try {
        for (const [port, what] of POD_LISTENERS) fds.push(listenInNetns(netnsPath, port, what));
      } catch (err) {
        fds.forEach((fd) => closeSync(fd));
        throw err;
      }
      const listeners = await bindListeners({ host: '0.0.0.0', outbound: 15001, inboundPlaintext: 15006, inbound: HBONE_PORT, fds });
      if (opts.migrateQueuedConnections) enableRequestMigration(netnsPath);
      pods.set(podIp, { netns: netnsPath, listeners });
      dialer.register(podIp, netnsPath);
      log.info('serving a pod namespace', { podIp, netns: netnsPath });
    },
    detachPod,
    attachedPods: () => new Map([...pods].map(([ip, p]) => [ip, p.netns])),
    heldListeners: () => [
      ...node.all.map((l) => ({ port: l.port, fd: l.fd })),
      ...[...pods.values()].flatMap((p) => p.listeners.all.map((l) => ({ port: l.port, fd: l.fd, netns: p.netns }))),
    ],
    async drain(deadlineMs: number, successorWaitMs = Math.min(SUCCESSOR_WAIT_MS, deadlineMs / 4)) {
      await handOver(daemon.heldListeners(), successorWaitMs);
      await daemon.drainConnections(deadlineMs);
    },
    async drainConnections(deadlineMs: number) {
      for (const set of everySet()) set.all.forEach((l) => l.stopAccepting());
      // HTTP clients move on their next request; HBONE peers get GOAWAY (stopAccepting) and open sessions to the successor.
      http.drain();
      httpInbound.drain();
      pool.close();
      log.info('draining connections', { open: tracker.size, deadlineMs });
      if (!(await tracker.idleWithin(deadlineMs))) {
        log.warn('drain deadline reached: closing the remaining connections', { open: tracker.size });
        const stuck = await tracker.closeAll('drain deadline reached', CLOSE_GRACE_MS);
        if (stuck) log.warn('connections closed at the drain deadline did not report their close: stopping without them', { connections: stuck, graceMs: CLOSE_GRACE_MS });
      }
    },
    async stop() {
      stopped = true;
      clearInterval(sweep);
      for (const set of everySet()) set.all.forEach((l) => l.close());
      tracker.destroyAll('data plane stopped');
      http.close();
      pool.destroy();
      fairShare.stop();
      cpuPressure?.close();
      limits.close();
    },
  };
  return daemon;
}

interface ListenerSet {
  outbound: OutboundListener;
  inboundPlaintext: InboundPlaintextListener;
  inbound: InboundListener;
  all: (OutboundListener | InboundPlaintextListener | InboundListener)[];
}
