// Labels of nodemesh_requests_total and nodemesh_request_duration_seconds, as
// Istio's standard request metrics, for both reporters.

import type { ConfigStore } from '../config-store.ts';
import { peerLabels } from '../metrics.ts';
import type { DaemonMetrics, PeerReport, RequestLabel } from '../metrics.ts';
import type { HttpClientConnection, Upstream } from './request-router.ts';

export interface RequestReport extends PeerReport {
  responseCode: number;
}

export function requestLabels(r: RequestReport): Record<RequestLabel, string> {
  return { ...peerLabels(r), response_code: String(r.responseCode) };
}

/**
 * Counts one request on the source node, HTTP/1 or HTTP/2. `responseCode` 0 is a
 * response cut before its headers, reported as Istio does.
 */
export function recordSourceRequest(
  config: ConfigStore, metrics: DaemonMetrics, conn: HttpClientConnection, upstream: Upstream | undefined, responseCode: number, started: number,
): void {
  const w = upstream?.workload;
  const labels = requestLabels({
    reporter: 'source', sourceWorkload: conn.source, sourcePrincipal: conn.sourceIdentity, destinationWorkload: w,
    destinationPrincipal: w ? config.identityOf(w) : null,
    service: upstream?.service ?? config.serviceByVip(conn.dstIp), security: w?.enrolled ? 'mutual_tls' : 'none',
    responseCode,
  });
  metrics.requests.inc(labels);
  metrics.requestDuration.observe(labels, (performance.now() - started) / 1000);
}
