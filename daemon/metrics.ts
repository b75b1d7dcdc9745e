// Prometheus metrics of the data plane, with labels modelled on Istio's standard
// metrics. TCP byte counters are updated once, at close, from the socket's own
// byte counts, so the hot path carries no per-chunk accounting.

import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { Service, Workload } from '../core/types.ts';

export const TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_service',
  'connection_security_policy',
] as const;

export type TcpLabel = (typeof TCP_LABELS)[number];
export type TcpLabels = Record<TcpLabel, string>;

/** The two ends of a connection or request, as both kinds of metrics label them. */
export interface PeerReport {
  reporter: 'source' | 'destination';
  sourceWorkload?: Workload;
  sourcePrincipal: string | null;
  destinationWorkload?: Workload;
  destinationPrincipal: string | null;
  service?: Service;
  security: 'mutual_tls' | 'none';
}

/** Istio's standard labels of a connection or request; "unknown" where an end is not in the mesh. */
export function peerLabels(r: PeerReport): TcpLabels {
  return {
    reporter: r.reporter,
    source_workload: r.sourceWorkload?.workloadName ?? 'unknown',
    source_workload_namespace: r.sourceWorkload?.namespace ?? 'unknown',
    source_principal: r.sourcePrincipal ?? 'unknown',
    destination_workload: r.destinationWorkload?.workloadName ?? 'unknown',
    destination_workload_namespace: r.destinationWorkload?.namespace ?? 'unknown',
    destination_principal: r.destinationPrincipal ?? 'unknown',
    // Istio reports the Service's cluster-local host name.
    destination_service: r.service ? `${r.service.name}.${r.service.namespace}.svc.cluster.local` : 'unknown',
    connection_security_policy: r.security,
  };
}

export const REQUEST_LABELS = [...TCP_LABELS, 'response_code'] as const;
export type RequestLabel = (typeof REQUEST_LABELS)[number];

const DENIED_LABELS = ['reporter', 'destination_workload', 'destination_workload_namespace', 'source_principal', 'reason'] as const;
export type DeniedLabel = (typeof DENIED_LABELS)[number];

/**
 * Why the destination refused or closed a connection (the `reason` label):
 * authorization policy, strict mTLS, a policy change closing an open one; at
 * 15008 also a Forwarded header not bound to the peer's identity, a peer over
 * its open-stream limit, and a handshake not finished within its deadline.
 */
export type DeniedReason = 'policy' | 'strict_mtls' | 'policy_changed' | 'forwarded_mismatch' | 'source_limit' | 'handshake_timeout';

export interface DaemonMetrics {
  tcpOpened: Counter<TcpLabel>;
  tcpClosed: Counter<TcpLabel>;
  /** Bytes sent to the source: the response direction, as in Istio. */
  tcpSent: Counter<TcpLabel>;
  /** Bytes received from the source: the request direction. */
  tcpReceived: Counter<TcpLabel>;
  /** Connections refused or closed by the destination; `reason` is a DeniedReason. */
  tcpDenied: Counter<DeniedLabel>;
  requests: Counter<RequestLabel>;
  requestDuration: Histogram<RequestLabel>;
}

/** Registers the data-plane metrics on `registry`, reusing ones already registered there. */
export function createMetrics(registry: Registry): DaemonMetrics {
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
    (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
  return {
    tcpOpened: counter('nodemesh_tcp_connections_opened_total', 'TCP connections opened through the mesh.', TCP_LABELS),
    tcpClosed: counter('nodemesh_tcp_connections_closed_total', 'TCP connections closed.', TCP_LABELS),
    tcpSent: counter('nodemesh_tcp_sent_bytes_total', 'Bytes sent back to the source of TCP connections (response direction).', TCP_LABELS),
    tcpReceived: counter('nodemesh_tcp_received_bytes_total', 'Bytes received from the source of TCP connections (request direction).', TCP_LABELS),
    tcpDenied: counter('nodemesh_tcp_connections_denied_total', 'TCP connections refused or closed by the destination: authorization policy, strict mTLS, or the HBONE port\'s limits (reason label).', DENIED_LABELS),
    requests: counter('nodemesh_requests_total', 'HTTP requests through the mesh.', REQUEST_LABELS),
    requestDuration:
      (registry.getSingleMetric('nodemesh_request_duration_seconds') as Histogram<RequestLabel> | undefined) ??
      new Histogram({
        name: 'nodemesh_request_duration_seconds',
        help: 'HTTP request duration, from the request to the end of the response.',
        labelNames: REQUEST_LABELS,
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers: [registry],
      }),
  };
}
