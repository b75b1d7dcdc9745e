// Where one HTTP request goes, for HTTP/1 and HTTP/2 alike: the HTTPRoute rule
// that matches it (with its filters applied to the request), the backend Service
// by weight, the endpoint by peak-EWMA, and the connection to it (HBONE for a
// remote pod, TCP for one on this node after the in-process authorization).
// The mesh answers itself (LocalReply) where the Gateway API says so.

import type { Duplex } from 'node:stream';
import type { HeaderModifier, Service, Workload } from '../../core/types.ts';
import type { ConfigStore } from '../config-store.ts';
import { checkAccess } from '../access-check.ts';
import type { AuthorizationInput } from '../authorization.ts';
import type { DaemonMetrics } from '../metrics.ts';
import type { HbonePool } from '../hbone-pool.ts';
import { targetPort } from '../destination.ts';
import { connectTcp } from '../tcp-connect.ts';
import { RouteTable, pickWeighted } from './route-table.ts';
import { modifyHeaders, redirectLocation, rewritePath } from './filters.ts';
import type { PeakEwmaBalancer } from './peak-ewma.ts';

/** The captured connection an HTTP request arrived on. */
export interface HttpClientConnection {
  source: Workload;
  sourceIdentity: string;
  sourceIp: string;
  /** Original destination: a Service VIP or a workload IP. */
  dstIp: string;
  dstPort: number;
}

export interface Upstream {
  ip: string;
  port: number;
  workload?: Workload;
  service?: Service;
}

/** Where a request goes after routing: a Service port, or the pod the client dialled. */
export type Target = { service: Service; port: number } | { direct: Upstream };

/** What a request needs to be read and rewritten: node:http and node:http2 requests both fit. */
export interface RoutableRequest {
  url?: string;
  method?: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface Routed {
  target: Target;
  timeouts: { request: number; backend: number };
  responseHeaders?: HeaderModifier;
}

export class LocalReply {
  readonly status: number;
  readonly reason: string;
  readonly headers: Record<string, string>;
  constructor(status: number, reason: string, headers: Record<string, string> = {}) {
    this.status = status;
    this.reason = reason;
    this.headers = headers;
  }
}

export class RequestRouter {
  readonly #config: ConfigStore;
  readonly #pool: HbonePool;
  readonly #metrics: DaemonMetrics;
  readonly #balancer: PeakEwmaBalancer;
  #routes = new RouteTable([]);
  #routesVersion = '';

  constructor(config: ConfigStore, pool: HbonePool, metrics: DaemonMetrics, balancer: PeakEwmaBalancer) {
    this.#config = config;
    this.#pool = pool;
    this.#metrics = metrics;
    this.#balancer = balancer;
  }

  #routeTable(): RouteTable {
    const config = this.#config;
    const version = `${config.epoch}/${config.version}`;
    if (version !== this.#routesVersion) {
      this.#routes = new RouteTable(config.routes());
      this.#routesVersion = version;
    }
    return this.#routes;
  }

  /**
   * Routing and filters for one request, mutating its URL and headers as the
   * filters say; a LocalReply when the mesh answers itself (404, 500, redirect).
   */
  route(req: RoutableRequest, conn: HttpClientConnection): Routed | LocalReply {
    const config = this.#config;
    const service = config.serviceByVip(conn.dstIp);
    if (!service) return { target: { direct: { ip: conn.dstIp, port: conn.dstPort, workload: config.workloadByIp(conn.dstIp) } }, timeouts: { request: 0, backend: 0 } };
    const url = new URL(req.url ?? '/', 'http://request.invalid');
    const decision = this.#routeTable().decide(service, conn.dstPort, conn.source.namespace, {
      method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers,
    });
    if (decision.kind === 'unrouted') return { target: { service, port: conn.dstPort }, timeouts: { request: 0, backend: 0 } };
    if (decision.kind === 'no-match') return new LocalReply(404, `no rule of the HTTPRoutes attached to ${service.namespace}/${service.name} matches ${req.method} ${url.pathname}`);
    const { rule, match, route } = decision;
    let responseHeaders: HeaderModifier | undefined;
    for (const filter of rule.filters) {
      switch (filter.type) {
        case 'RequestRedirect': {
          const location = redirectLocation(filter, { scheme: 'http', host: authorityOf(req) ?? conn.dstIp, port: conn.dstPort, path: url.pathname, search: url.search }, match);
          return new LocalReply(filter.statusCode || 302, '', { location });
        }
        case 'RequestHeaderModifier':
          if (filter.headerModifier) modifyHeaders(req.headers, filter.headerModifier);
          break;
        case 'ResponseHeaderModifier':
          responseHeaders = filter.headerModifier;
          break;
        case 'URLRewrite':
          if (filter.hostname) req.headers[':authority' in req.headers ? ':authority' : 'host'] = filter.hostname;
          if (filter.path) req.url = rewritePath(url.pathname, filter.path, match) + url.search;
          break;
      }
    }
    const where = `HTTPRoute ${route.namespace}/${route.name}`;
    if (rule.backendRefs.length === 0) return new LocalReply(500, `${where}: the matched rule has no backendRefs`);
    const index = pickWeighted(rule.backendRefs.map((b) => b.weight));
    if (index < 0) return new LocalReply(500, `${where}: every backendRef of the matched rule has weight 0`);
    const ref = rule.backendRefs[index]!;
    if (ref.invalidReason) return new LocalReply(500, `${where}: backend ${ref.namespace}/${ref.name}: ${ref.invalidReason}`);
    const backend = config.serviceByKey(ref.namespace, ref.name);
    if (!backend) return new LocalReply(500, `${where}: backend Service ${ref.namespace}/${ref.name} does not exist`);
    return { target: { service: backend, port: ref.port }, timeouts: { request: rule.requestTimeoutMs, backend: rule.backendRequestTimeoutMs }, responseHeaders };
  }

  /** One endpoint of the target, avoiding those already tried when others are ready. */
  upstream(target: Target, tried: Set<string>): Upstream | LocalReply {
    if ('direct' in target) return target.direct;
    const config = this.#config;
    const { service, port } = target;
    const name = `${service.namespace}/${service.name}`;
    const servicePort = service.ports.find((p) => p.port === port);
    if (!servicePort) return new LocalReply(503, `Service ${name} has no port ${port}`);
    const candidates = service.endpoints.filter((e) => e.ready && targetPort(servicePort, workloadOf(config, e)) !== undefined);
    const fresh = candidates.filter((e) => !tried.has(e.ip));
    const endpoint = this.#balancer.choose(fresh.length ? fresh : candidates);
    if (!endpoint) return new LocalReply(503, `Service ${name} has no ready endpoint for port ${port}`);
    const workload = workloadOf(config, endpoint);
    return { ip: endpoint.ip, port: targetPort(servicePort, workload)!, workload, service };
  }

  connect(conn: HttpClientConnection, upstream: Upstream): Promise<Duplex> {
    const config = this.#config;
    const pool = this.#pool;
    const w = upstream.workload;
    if (w?.enrolled && w.node !== config.nodeName) {
      return pool.connect({
        sourceIdentity: conn.sourceIdentity, destinationIdentity: config.identityOf(w),
        destinationIp: upstream.ip, destinationNode: w.node, target: `${upstream.ip}:${upstream.port}`, forwardedFor: conn.sourceIp,
      });
    }
    return connectTcp(upstream.ip, upstream.port);
  }

  /** Same-node enrolled destinations are authorized here per request, as their node's inbound side would. */
  authorizeLocal(req: RoutableRequest, conn: HttpClientConnection, upstream: Upstream): LocalReply | undefined {
    const w = upstream.workload;
    const config = this.#config;
    const metrics = this.#metrics;
    if (!w?.enrolled || w.node !== config.nodeName) return undefined;
    const input: AuthorizationInput = {
      sourcePrincipal: conn.sourceIdentity, sourceNamespace: conn.source.namespace, sourceIp: conn.sourceIp, destination: w, port: upstream.port,
      http: { method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://request.invalid').pathname },
    };
    const decision = checkAccess(config, input);
    if (decision.allowed) return undefined;
    metrics.tcpDenied.inc({ reporter: 'destination', destination_workload: w.workloadName, destination_workload_namespace: w.namespace, source_principal: conn.sourceIdentity, reason: 'policy' });
    return new LocalReply(403, decision.reason);
  }
}

function workloadOf(config: ConfigStore, e: { workloadUid: string; ip: string }): Workload | undefined {
  return (e.workloadUid ? config.workloadByUid(e.workloadUid) : undefined) ?? config.workloadByIp(e.ip);
}

/** Host of the request: HTTP/2's :authority or HTTP/1's Host. */
function authorityOf(req: RoutableRequest): string | undefined {
  const value = req.headers[':authority'] ?? req.headers.host;
  return Array.isArray(value) ? value[0] : value;
}
