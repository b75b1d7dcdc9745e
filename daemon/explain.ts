// `/explain`: what this node's data plane would do with a connection, without
// making it. Answers the operator's first question when traffic misbehaves —
// was it captured, where would it go, over what, and which policy decides —
// from the same config and decision functions the listeners use. For a Service
// with routes it also names the route and rule a request would take (the
// request's method, path and headers may be given; GET / otherwise), decided
// by the same route table the HTTP plan uses.

import type { ConfigStore } from './config-store.ts';
import type { Workload } from '../core/types.ts';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { decide } from './admission.ts';
import { targetPort } from './destination.ts';
import { RouteTable } from './l7/route-table.ts';

export interface ExplainQuery {
  sourceIp: string;
  destinationIp: string;
  port: number;
  /** The HTTP request to route; absent: GET / without headers. */
  http?: { method: string; path: string; headers: Record<string, string> };
}

/** The route decision for one request on a Service port that has routes. */
export interface ExplainedRoute {
  request: { method: string; path: string; headers: Record<string, string> };
  /** unrouted: no route applies to this client; no-match: routes apply, no rule matches (404, UNIMPLEMENTED for gRPC). */
  decision: 'unrouted' | 'no-match' | 'matched';
  /** "HTTPRoute ns/name" or "GRPCRoute ns/name". */
  route?: string;
  /** Index of the rule in spec.rules, and of the match in its matches. */
  rule?: number;
  match?: number;
  /** The rule's backends by weight, each with why it is unusable, if it is. */
  backends?: { service: string; port: number; weight: number; invalidReason: string; filters: string[] }[];
  /** The rule's own filters, by type. */
  filters?: string[];
}

export interface ExplainedTarget {
  ip: string;
  port: number;
  workload: string | null;
  /**
   * hbone / same-node: meshed both ends, mTLS with both identities; plaintext: a source
   * outside the mesh to a meshed destination, captured at the destination's node (15006),
   * no identity, the destination's policies decide; passthrough: the destination is not
   * in the mesh, the mesh neither captures nor decides.
   */
  path: 'hbone' | 'same-node' | 'plaintext' | 'passthrough';
  node: string | null;
  security: 'mutual_tls' | 'none';
  authorization: { allowed: boolean; policy?: string; reason: string } | null;
}

export interface Explanation {
  node: string;
  source: { ip: string; workload: string | null; enrolled: boolean; local: boolean; identity: string | null };
  capture: string;
  service: string | null;
  /** One entry per candidate endpoint (a Service VIP), or the single destination. */
  targets: ExplainedTarget[];
  /** Present when routes attach to the Service: the route and rule the request would take. */
  route?: ExplainedRoute;
}

export class ExplainQueryError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.BAD_EXPLAIN_QUERY, message);
  }
}

export function explain(config: ConfigStore, q: ExplainQuery): Explanation {
  const identity = (w: Workload) => config.identityOf(w);
  const source = config.workloadByIp(q.sourceIp);
  const sourceLocal = source?.node === config.nodeName;
  const sourceMeshed = Boolean(source?.enrolled && sourceLocal);
  // An enrolled source on any node reaches meshed destinations with its own identity (its node's outbound).
  const sourceIdentity = source?.enrolled ? identity(source) : null;
  const service = config.serviceByVip(q.destinationIp);

  const targetOf = (ip: string, port: number, workload: Workload | undefined): ExplainedTarget => {
    const meshed = Boolean(workload?.enrolled);
    const path = !meshed ? 'passthrough' : !sourceIdentity ? 'plaintext' : workload?.node === source?.node ? 'same-node' : 'hbone';
    // Authorization is decided on the destination's node; it is evaluated here from the same config.
    const authorization = workload && meshed
      ? decide(config, {
          sourcePrincipal: sourceIdentity,
          sourceNamespace: sourceIdentity ? source!.namespace : null,
          sourceIp: q.sourceIp,
          destination: workload,
          port,
        })
      : null;
    return {
      ip, port, workload: workload ? `${workload.namespace}/${workload.name}` : null, path,
      node: workload?.node ?? null, security: path === 'hbone' || path === 'same-node' ? 'mutual_tls' : 'none', authorization,
    };
  };

  let targets: ExplainedTarget[];
  if (service) {
    const sp = service.ports.find((p) => p.port === q.port);
    if (!sp) throw new ExplainQueryError(`service ${service.namespace}/${service.name} has no port ${q.port}; its ports are ${service.ports.map((p) => p.port).join(', ')}`);
    targets = service.endpoints.filter((e) => e.ready).flatMap((e) => {
      const workload = config.workloadByUid(e.workloadUid) ?? config.workloadByIp(e.ip);
      const port = targetPort(sp, workload);
      return port === undefined ? [] : [targetOf(e.ip, port, workload)];
    });
  } else {
    targets = [targetOf(q.destinationIp, q.port, config.workloadByIp(q.destinationIp))];
  }

  const vipCaptured = service?.endpoints.some((e) => config.isLocalEnrolled(e.ip));
  const capture = sourceMeshed
    ? 'captured on this node by outbound (15001): the source is a local enrolled workload'
    : config.isLocalEnrolled(q.destinationIp)
      ? `captured on this node by inbound ${q.port === 15008 ? 'HBONE (15008)' : 'plaintext (15006)'}: the destination is a local enrolled workload`
      : vipCaptured
        ? 'captured on this node by inbound plaintext (15006): the Service has an enrolled endpoint on this node'
        : 'not captured on this node';
  const explanation: Explanation = {
    node: config.nodeName,
    source: { ip: q.sourceIp, workload: source ? `${source.namespace}/${source.name}` : null, enrolled: Boolean(source?.enrolled), local: sourceLocal, identity: sourceIdentity },
    capture,
    service: service ? `${service.namespace}/${service.name}` : null,
    targets,
  };
  if (service) {
    const route = explainRoute(new RouteTable(config.routes()), service, q, source?.namespace ?? '');
    if (route) explanation.route = route;
  }
  return explanation;
}

function explainRoute(table: RouteTable, service: { namespace: string; name: string }, q: ExplainQuery, clientNamespace: string): ExplainedRoute | undefined {
  if (!table.hasRoutes(service)) return undefined;
  const request = q.http ?? { method: 'GET', path: '/', headers: {} };
  const url = new URL(request.path, 'http://explain.invalid');
  const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k.toLowerCase(), v]));
  const d = table.decide(service, q.port, clientNamespace, { method: request.method, path: url.pathname, query: url.searchParams, headers });
  if (d.kind !== 'matched') return { request, decision: d.kind };
  return {
    request, decision: 'matched',
    route: `${d.route.kind || 'HTTPRoute'} ${d.route.namespace}/${d.route.name}`,
    rule: d.route.rules.indexOf(d.rule), match: d.rule.matches.indexOf(d.match),
    filters: d.rule.filters.map((f) => f.type),
    backends: d.rule.backendRefs.map((b) => ({ service: `${b.namespace}/${b.name}`, port: b.port, weight: b.weight, invalidReason: b.invalidReason, filters: (b.filters ?? []).map((f) => f.type) })),
  };
}
