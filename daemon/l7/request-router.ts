// Where one HTTP request goes, for HTTP/1 and HTTP/2 alike, decided once per
// request as a RequestPlan: the HTTPRoute rule that matches it (its filters
// applied to the request), the backend Service by weight, and the timeouts.
// Each attempt then asks the plan for its next endpoint: peak-EWMA over the ready
// ones not tried yet, authorized in-process when the pod is on this node (as its
// inbound side would), and carrying its own way to connect — HBONE for a remote
// enrolled pod, TCP otherwise. The mesh answers itself (LocalReply) where the
// Gateway API says so.

import type { Duplex } from 'node:stream';
import { debug } from '../../core/log.ts';
import type { HeaderModifier, HttpRouteRetry, MeshSettings, Service, Workload } from '../../core/types.ts';
import type { ConfigStore } from '../config-store.ts';
import type { Admission } from '../admission.ts';
import type { HbonePool } from '../hbone-pool.ts';
import { targetPort } from '../destination.ts';
import type { PodDialer } from '../pod-dialer.ts';
import { RouteTable, pickWeighted } from './route-table.ts';
import { applyRequestFilters } from './filters.ts';
import type { RoutableRequest } from './filters.ts';
import { GrpcStatus, LocalReply, grpcReply } from './local-reply.ts';
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

/** Where an attempt goes: the pod, and the Service it was reached through. */
export interface Upstream {
  ip: string;
  port: number;
  workload?: Workload;
  service?: Service;
}

/** An upstream with its way to connect. */
export interface Endpoint extends Upstream {
  /** Connections to the endpoint carry the source's identity: pools are keyed by this. */
  poolKey: string;
  /** Opens a connection to it: an HBONE stream to a remote enrolled pod, else TCP. */
  connect(): Promise<Duplex>;
}

const trace = debug('http');

type Target = { service: Service; port: number } | { direct: Upstream };

const NO_TIMEOUTS = { request: 0, backend: 0 };

export class RequestRouter {
  readonly #config: ConfigStore;
  readonly #pool: HbonePool;
  readonly #admission: Admission;
  readonly #balancer: PeakEwmaBalancer;
  readonly #dialer: PodDialer;
  #routes = new RouteTable([]);
  /** The endpoint of each client connection's latest attempt, and the mesh settings (trust domain) it was made under. */
  readonly #lastEndpoint = new WeakMap<HttpClientConnection, { endpoint: Endpoint; settings: MeshSettings }>();
  #routesEpoch = '';
  #routesVersion = -1;

  constructor(config: ConfigStore, pool: HbonePool, admission: Admission, balancer: PeakEwmaBalancer, dialer: PodDialer) {
    this.#config = config;
    this.#pool = pool;
    this.#admission = admission;
    this.#balancer = balancer;
    this.#dialer = dialer;
  }

  get balancer(): PeakEwmaBalancer {
    return this.#balancer;
  }

  #routeTable(): RouteTable {
    const config = this.#config;
    if (config.version !== this.#routesVersion || config.epoch !== this.#routesEpoch) {
      this.#routes = new RouteTable(config.routes());
      this.#routesEpoch = config.epoch;
      this.#routesVersion = config.version;
    }
    return this.#routes;
  }

  /**
   * Routing and filters for one request, mutating its URL and headers as the
   * filters say; a LocalReply when the mesh answers itself (404, 500, redirect).
   */
  plan(req: RoutableRequest, conn: HttpClientConnection): RequestPlan | LocalReply {
    const config = this.#config;
    const service = config.serviceByVip(conn.dstIp);
    if (!service) {
      const direct = { ip: conn.dstIp, port: conn.dstPort, workload: config.workloadByIp(conn.dstIp) };
      return new RequestPlan(this, req, conn, { direct }, NO_TIMEOUTS, undefined);
    }
    const routes = this.#routeTable();
    // Most Services have no route: no URL to parse, no rules to test.
    if (!routes.hasRoutes(service)) return new RequestPlan(this, req, conn, { service, port: conn.dstPort }, NO_TIMEOUTS, undefined);
    const url = new URL(req.url ?? '/', 'http://request.invalid');
    const decision = routes.decide(service, conn.dstPort, conn.source.namespace, {
      method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers,
    });
    if (decision.kind === 'unrouted') return new RequestPlan(this, req, conn, { service, port: conn.dstPort }, NO_TIMEOUTS, undefined);
    if (decision.kind === 'no-match') {
      const what = `no rule of the ${decision.grpc ? 'GRPCRoutes' : 'HTTPRoutes'} attached to ${service.namespace}/${service.name} matches ${req.method} ${url.pathname}`;
      // GRPCRoute: an unmatched call is UNIMPLEMENTED, as a gRPC server answers an unknown method.
      return decision.grpc ? grpcReply(GrpcStatus.UNIMPLEMENTED, what) : new LocalReply(404, what);
    }
    const { rule, match, route } = decision;
    const grpc = route.kind === 'GRPCRoute';
    // The Gateway API's 500 for an unusable backend is UNAVAILABLE for gRPC.
    const invalid = (reason: string) => (grpc ? grpcReply(GrpcStatus.UNAVAILABLE, reason) : new LocalReply(500, reason));
    const dialled = { ip: conn.dstIp, port: conn.dstPort };
    const filtered = applyRequestFilters(rule.filters, req, url, match, dialled);
    if (filtered instanceof LocalReply) return filtered;
    const where = `${route.kind || 'HTTPRoute'} ${route.namespace}/${route.name}`;
    if (rule.backendRefs.length === 0) return invalid(`${where}: the matched rule has no backendRefs`);
    const index = pickWeighted(rule.backendRefs.map((b) => b.weight));
    if (index < 0) return invalid(`${where}: every backendRef of the matched rule has weight 0`);
    const ref = rule.backendRefs[index]!;
    if (ref.invalidReason) return invalid(`${where}: backend ${ref.namespace}/${ref.name}: ${ref.invalidReason}`);
    const backend = config.serviceByKey(ref.namespace, ref.name);
    if (!backend) return invalid(`${where}: backend Service ${ref.namespace}/${ref.name} does not exist`);
    // The backendRef's own filters apply to what goes to this backend only, after the rule's.
    let responseHeaders = filtered.responseHeaders;
    if (ref.filters?.length) {
      const own = applyRequestFilters(ref.filters, req, url, match, dialled);
      if (own instanceof LocalReply) return own;
      responseHeaders = joinModifiers(responseHeaders, own.responseHeaders);
    }
    const mirrors = [...rule.filters, ...ref.filters ?? []].flatMap((x) => (x.type === 'RequestMirror' && x.mirror && !x.mirror.invalidReason ? [x.mirror] : []));
    const timeouts = { request: rule.requestTimeoutMs, backend: rule.backendRequestTimeoutMs };
    const retry = rule.retry ?? undefined;
    trace('routed', { method: req.method, path: url.pathname, route: `${route.namespace}/${route.name}`, backend: `${ref.namespace}/${ref.name}:${ref.port}` });
    const plan = new RequestPlan(this, req, conn, { service: backend, port: ref.port }, timeouts, responseHeaders);
    plan.retry = retry;
    plan.route = { kind: route.kind || 'HTTPRoute', namespace: route.namespace, name: route.name, rule: route.rules.indexOf(rule), backend: `${ref.namespace}/${ref.name}:${ref.port}` };
    plan.mirrors = mirrors.flatMap((m) => {
      const svc = config.serviceByKey(m.namespace, m.name);
      return svc ? [{ service: svc, port: m.port }] : [];
    });
    return plan;
  }

  /** A copy of a request for a mirror: its own endpoint, authorized like any attempt, never retried. */
  mirrorEndpoint(req: RoutableRequest, conn: HttpClientConnection, mirror: { service: Service; port: number }): Endpoint | undefined {
    const chosen = this.choose(mirror, new Set());
    if (chosen instanceof LocalReply || this.authorizeLocal(req, conn, chosen)) return undefined;
    return this.endpoint(conn, chosen);
  }

  /** One endpoint of the target, avoiding those in `tried` when others are ready. */
  choose(target: Target, tried: ReadonlySet<string>): Upstream | LocalReply {
    if ('direct' in target) return target.direct;
    const config = this.#config;
    const { service, port } = target;
    const servicePort = service.ports.find((p) => p.port === port);
    if (!servicePort) return new LocalReply(503, `Service ${service.namespace}/${service.name} has no port ${port}`);
    const candidates = service.endpoints.filter((e) => e.ready && targetPort(servicePort, config.endpointWorkload(e)) !== undefined);
    const fresh = tried.size ? candidates.filter((e) => !tried.has(e.ip)) : candidates;
    const endpoint = this.#balancer.choose(fresh.length ? fresh : candidates);
    if (!endpoint) return new LocalReply(503, `Service ${service.namespace}/${service.name} has no ready endpoint for port ${port}`);
    const workload = config.endpointWorkload(endpoint);
    return { ip: endpoint.ip, port: targetPort(servicePort, workload)!, workload, service };
  }

  /** The endpoint with its connection: HBONE to a remote enrolled pod, else TCP (from inside a same-node pod's namespace when captured there). */
  endpoint(conn: HttpClientConnection, to: Upstream): Endpoint {
    // A connection's requests mostly go where the previous one went: its endpoint is reused.
    const settings = this.#config.settings();
    const last = this.#lastEndpoint.get(conn);
    const e = last?.endpoint;
    if (e && e.ip === to.ip && e.port === to.port && e.workload === to.workload && e.service === to.service && last.settings === settings) return e;
    const endpoint = this.#newEndpoint(conn, to);
    this.#lastEndpoint.set(conn, { endpoint, settings });
    return endpoint;
  }

  #newEndpoint(conn: HttpClientConnection, to: Upstream): Endpoint {
    const config = this.#config;
    const w = to.workload;
    const poolKey = `${conn.sourceIdentity}|${to.ip}:${to.port}`;
    if (w?.enrolled && w.node !== config.nodeName) {
      const request = {
        sourceIdentity: conn.sourceIdentity, destinationIdentity: config.identityOf(w),
        destinationIp: to.ip, destinationNode: w.node, target: `${to.ip}:${to.port}`, forwardedFor: conn.sourceIp,
      };
      return { ...to, poolKey, connect: () => this.#pool.connect(request) };
    }
    return { ...to, poolKey, connect: () => this.#dialer.connect(to.ip, to.port, conn.sourceIp) };
  }

  /** Same-node enrolled destinations are authorized here per request, as their node's inbound side would. */
  authorizeLocal(req: RoutableRequest, conn: HttpClientConnection, to: Upstream): LocalReply | undefined {
    const w = to.workload;
    if (!w?.enrolled || w.node !== this.#config.nodeName) return undefined;
    const decision = this.#admission.admit({
      sourcePrincipal: conn.sourceIdentity, sourceNamespace: conn.source.namespace, sourceIp: conn.sourceIp, destination: w, port: to.port,
      http: { method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://request.invalid').pathname },
    }, { what: 'same-node HTTP request' });
    return decision.allowed ? undefined : new LocalReply(403, decision.reason);
  }
}

/** Both modifiers in order: the rule's, then the backendRef's. */
function joinModifiers(a: HeaderModifier | undefined, b: HeaderModifier | undefined): HeaderModifier | undefined {
  if (!a || !b) return a ?? b;
  return { set: [...a.set, ...b.set], add: [...a.add, ...b.add], remove: [...a.remove, ...b.remove] };
}

/** The route and rule a request took: for traces, metrics and /explain. */
export interface RouteTaken {
  kind: string;
  namespace: string;
  name: string;
  rule: number;
  backend: string;
}

/** One request's route, decided once; each attempt takes the next endpoint from it. */
export class RequestPlan {
  readonly timeouts: { request: number; backend: number };
  /** The route and rule that decided, when one did. */
  route: RouteTaken | undefined;
  /** The matched rule's `retry`, replacing the node's retried statuses and attempts. */
  retry: HttpRouteRetry | undefined;
  /** RequestMirror targets: each gets a copy, whose answer is discarded. */
  mirrors: { service: Service; port: number }[] = [];
  /** The matched rule's ResponseHeaderModifier. */
  readonly responseHeaders: HeaderModifier | undefined;
  readonly #router: RequestRouter;
  readonly #req: RoutableRequest;
  readonly #conn: HttpClientConnection;
  readonly #target: Target;
  readonly #tried = new Set<string>();
  /** The upstream of the latest attempt, refused or not: request metrics name it. */
  #chosen: Upstream | undefined;

  constructor(
    router: RequestRouter, req: RoutableRequest, conn: HttpClientConnection, target: Target,
    timeouts: { request: number; backend: number }, responseHeaders: HeaderModifier | undefined,
  ) {
    this.#router = router;
    this.#req = req;
    this.#conn = conn;
    this.#target = target;
    this.timeouts = timeouts;
    this.responseHeaders = responseHeaders;
  }

  get chosen(): Upstream | undefined {
    return this.#chosen;
  }

  /** The endpoint of the next attempt (another one than before, when one is ready), authorized; or why there is none. */
  next(): Endpoint | LocalReply {
    const chosen = this.#router.choose(this.#target, this.#tried);
    if (chosen instanceof LocalReply) return chosen;
    this.#chosen = chosen;
    this.#tried.add(chosen.ip);
    return this.#router.authorizeLocal(this.#req, this.#conn, chosen) ?? this.#router.endpoint(this.#conn, chosen);
  }
}
