// Labels of nodemesh_requests_total and nodemesh_request_duration_seconds, as
// Istio's standard request metrics, for both reporters; and the tap's `request`
// event (../tap.ts), recorded at the same point so the two never disagree.

import type { ConfigStore } from '../config-store.ts';
import { peerLabels } from '../metrics.ts';
import type { DaemonMetrics, PeerReport, RequestLabel } from '../metrics.ts';
import type { Tap, TapEnd } from '../tap.ts';
import type { RequestTrace } from '../tracing.ts';
import { serviceRef, workloadRef } from '../tap.ts';
import type { HttpClientConnection, Upstream } from './request-router.ts';

export interface RequestReport extends PeerReport {
  responseCode: number;
}

/** What the tap shows of one request, beside what the metrics label. */
export interface TappedRequest {
  tap?: Tap;
  method?: string;
  /** The request target; the tap shows its path without the query (which may carry secrets). */
  url?: string;
  protocol: 'http1' | 'http2';
  contentType?: string | string[];
  /** gRPC: the grpc-status the response carried (trailers, or headers of a trailers-only answer). */
  grpcStatus?: () => string | undefined;
  /** The request's trace (tracing.ts): ended here, with the same facts as the metrics. */
  trace?: RequestTrace;
}

export function requestLabels(r: RequestReport): Record<RequestLabel, string> {
  return { ...peerLabels(r), response_code: String(r.responseCode) };
}

/** The last label set built for a connection (or tunnel), with what it was built from. */
const lastLabels = new WeakMap<object, { report: RequestReport; labels: Record<RequestLabel, string> }>();

/**
 * requestLabels for a request of `connection`, the previous request's label
 * set when both ends and the code are the same objects and values: building
 * ten labels per request (and the series index's key of them) was a tenth of
 * what an HTTP request allocated.
 */
export function connectionRequestLabels(connection: object, r: RequestReport): Record<RequestLabel, string> {
  const last = lastLabels.get(connection);
  if (last && sameReport(last.report, r)) return last.labels;
  const labels = requestLabels(r);
  lastLabels.set(connection, { report: r, labels });
  return labels;
}

function sameReport(a: RequestReport, b: RequestReport): boolean {
  return a.responseCode === b.responseCode && a.destinationWorkload === b.destinationWorkload && a.service === b.service &&
    a.sourceWorkload === b.sourceWorkload && a.sourcePrincipal === b.sourcePrincipal && a.destinationPrincipal === b.destinationPrincipal &&
    a.reporter === b.reporter && a.security === b.security;
}

/**
 * Counts one request on the source node, HTTP/1 or HTTP/2. `responseCode` 0 is a
 * response cut before its headers, reported as Istio does.
 */
export function recordSourceRequest(
  config: ConfigStore, metrics: DaemonMetrics, conn: HttpClientConnection, upstream: Upstream | undefined, responseCode: number, started: number,
  tapped?: TappedRequest,
): void {
  const w = upstream?.workload;
  const destinationPrincipal = w ? config.identityOf(w) : null;
  const service = upstream?.service ?? config.serviceByVip(conn.dstIp);
  const labels = connectionRequestLabels(conn, {
    reporter: 'source', sourceWorkload: conn.source, sourcePrincipal: conn.sourceIdentity, destinationWorkload: w,
    destinationPrincipal, service, security: w?.enrolled ? 'mutual_tls' : 'none',
    responseCode,
  });
  const seconds = (performance.now() - started) / 1000;
  metrics.requests.inc(labels);
  metrics.requestDuration.observe(labels, seconds);
  if (!tapped?.tap?.active && !tapped?.trace) return;
  const ends: { source: TapEnd; destination: TapEnd } = {
    source: { ip: conn.sourceIp, workload: workloadRef(conn.source), identity: conn.sourceIdentity },
    destination: { ip: upstream?.ip ?? conn.dstIp, port: upstream?.port ?? conn.dstPort, workload: workloadRef(w), identity: destinationPrincipal, service: serviceRef(service) },
  };
  if (tapped.tap?.active) publishRequest(tapped, 'source', responseCode, seconds, ends, w?.enrolled ? 'mutual_tls' : 'none');
  if (tapped.trace) endTrace(tapped.trace, responseCode, ends);
}

/** Ends a request's trace with both ends as the tap names them. */
export function endTrace(trace: RequestTrace, status: number, ends: { source: TapEnd; destination: TapEnd }): void {
  const { source, destination } = ends;
  trace.end(status, {
    sourceIp: source.ip, sourceWorkload: source.workload, sourceIdentity: source.identity,
    destination: `${destination.ip}${destination.port ? `:${destination.port}` : ''}`, destinationWorkload: destination.workload,
    destinationIdentity: destination.identity, service: destination.service ?? null,
  });
}

/** The tap's `request` event: method, path or gRPC method, status, latency, both ends. */
export function publishRequest(
  t: TappedRequest, reporter: 'source' | 'destination', status: number, seconds: number, ends: { source: TapEnd; destination: TapEnd }, security: string,
): void {
  const contentType = String(t.contentType ?? '');
  const grpc = t.protocol === 'http2' && /^application\/grpc(\+|;|$)/.test(contentType);
  const path = pathOf(t.url);
  t.tap!.publish({
    event: 'request', reporter, protocol: grpc ? 'grpc' : t.protocol, method: t.method ?? 'GET', path,
    ...(grpc ? { grpcMethod: path.replace(/^\//, ''), grpcStatus: t.grpcStatus?.() ?? null } : {}),
    status, latencyMs: Math.round(seconds * 1e6) / 1e3, security, ...ends,
  });
}

export function pathOf(url: string | undefined): string {
  const target = url ?? '/';
  const q = target.indexOf('?');
  return (q === -1 ? target : target.slice(0, q)).slice(0, 2048);
}
