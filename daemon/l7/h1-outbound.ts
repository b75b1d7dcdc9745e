// HTTP/1.1 on the outbound side (HTTP/2 streams are relayed by h2-outbound.ts):
// connections the detector (or a Service's declared protocol) found to carry
// HTTP/1 are parsed here, and every request follows its own RequestPlan (route,
// backend, endpoint per attempt), sent with node:http over a keep-alive agent
// per endpoint whose connections are the endpoint's own (HBONE streams to remote
// pods, sockets to pods on this node); http-proxy carries only upgrades
// (WebSocket), where its socket handling earns its keep. Connect failures and configured statuses
// are retried within a budget when the body could be kept for replay (never a
// chunked body or one over 64 KiB); responses and bodies stream through unbuffered.

import http from 'node:http';
import type net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import httpProxy from './http-proxy.ts';
import { LRUCache } from 'lru-cache';
import type { ConfigStore } from '../config-store.ts';
import { logger } from '../../core/log.ts';
import type { DaemonMetrics } from '../metrics.ts';
import type { Tap } from '../tap.ts';
import type { Tracing } from '../tracing.ts';
import { bodiless, forwardResponse, forwardedRequestHeaders } from './http1-forward.ts';
import type { RetryBudget } from './retry-budget.ts';
import { UpstreamAgent, UpstreamConnectError } from './upstream-agent.ts';
import { Http1Connections } from './http1-drain.ts';
import { pathOf, recordSourceRequest } from './request-metrics.ts';
import { mirrorHttp1 } from './mirror.ts';
import { LocalReply, replyHttp1 as reply } from './local-reply.ts';
import type { Endpoint, HttpClientConnection, RequestPlan, RequestRouter } from './request-router.ts';
import type { SourceLimits } from '../source-limits.ts';
import { REASON_HEADER } from '../hbone-settings.ts';

const log = logger('h1-outbound');

/** Bodies up to this size are kept for replay; larger ones stream and are never retried. */
export const MAX_REPLAY_BODY = 64 * 1024;

export interface H1OutboundOptions {
  config: ConfigStore;
  metrics: DaemonMetrics;
  router: RequestRouter;
  budget: RetryBudget;
  /** Upstream statuses retried. */
  retryStatuses: ReadonlySet<number>;
  /** Attempts per request including the first. */
  maxAttempts: number;
  /** The node's tap: a `request` event per request while someone listens. */
  tap?: Tap;
  /** traceparent, x-request-id and a span per request (tracing.ts). */
  tracing?: Tracing;
  /** Concurrent requests per source pod; over it, 503. */
  limits?: SourceLimits;
}

type Outcome =
  | { kind: 'response'; response: http.IncomingMessage }
  | { kind: 'connect-failed' | 'failed'; error: Error }
  | { kind: 'timeout' }
  | { kind: 'local'; status: number; reason: string };

interface InFlight {
  proxyRequest: http.ClientRequest;
  settle(outcome: Outcome): void;
}

export class H1Outbound {
  readonly #opts: H1OutboundOptions;
  readonly #server: http.Server;
  readonly #proxy = httpProxy.createProxyServer({ xfwd: true });
  readonly #connections = new WeakMap<net.Socket, HttpClientConnection>();
  readonly #agents = new LRUCache<string, UpstreamAgent>({ max: 4096, dispose: (agent) => agent.destroy() });
  readonly #clients: Http1Connections;

  constructor(opts: H1OutboundOptions) {
    this.#opts = opts;
    // Never listens: captured sockets are handed to it. No server-side timeouts: the
    // application's own client decides how long it waits.
    this.#server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 60_000 });
    this.#clients = new Http1Connections(this.#server);
    this.#server.on('request', (req, res) => {
      // A client that aborts while its body is read ends only its own request.
      this.#onRequest(req, res).catch((err: Error) => {
        log.debug('request abandoned', { error: err.message });
        res.destroy();
      });
    });
    this.#server.on('upgrade', (req, socket, head) => this.#onUpgrade(req, socket as net.Socket, head));
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // A client that reset its connection sent nothing wrong, and can be told nothing.
      if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
      const status = clientErrorStatus(err.code);
      log.debug('HTTP from client refused', { status, error: err.message, code: err.code });
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    });
  }

  /** Takes over a captured connection whose first bytes (`head`, already read) are HTTP/1. */
  handle(client: net.Socket, conn: HttpClientConnection, head: Buffer): void {
    this.#connections.set(client, conn);
    this.#clients.add(client);
    this.#server.emit('connection', client);
    // The detector paused the socket; the parser reads the bytes it took first.
    client.unshift(head);
    client.resume();
  }

  /** Clients move to the next daemon: `connection: close` on each response, idle connections ended. */
  drain(): void {
    this.#clients.drain();
  }

  /** Closes pooled upstream connections. */
  close(): void {
    this.#clients.stop();
    this.#agents.clear();
    this.#proxy.close();
  }

  /** The keep-alive agent of an endpoint: its connections carry the source's identity. */
  #agentFor(endpoint: Endpoint): UpstreamAgent {
    let agent = this.#agents.get(endpoint.poolKey);
    if (!agent) {
      agent = new UpstreamAgent(endpoint.connect);
      this.#agents.set(endpoint.poolKey, agent);
    }
    return agent;
  }

  async #onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const conn = this.#connections.get(req.socket as net.Socket);
    if (!conn) return void res.destroy();
    const slot = this.#opts.limits?.startRequest(conn.source, conn.sourceIdentity);
    // Refused before any routing work; counted and logged by the limits.
    if (typeof slot === 'string') return reply(res, new LocalReply(503, slot, { [REASON_HEADER]: 'source_limit' }));
    const { config, metrics, router, budget } = this.#opts;
    const started = performance.now();
    const trace = this.#opts.tracing?.start('source', req.headers, { method: req.method ?? 'GET', path: pathOf(req.url) });
    let plan: RequestPlan | LocalReply | undefined;
    let overall: NodeJS.Timeout | undefined;
    let current: InFlight | undefined;
    // One listener for all of a request's ends: each more one grows the response's listener array.
    // Before routing, which can throw (a target the URL parser refuses): the slot is given back.
    res.on('close', () => {
      slot?.();
      clearTimeout(overall);
      // The client went away: stop the attempt in flight.
      if (!res.writableFinished) current?.proxyRequest.destroy();
      if (!plan) return;
      recordSourceRequest(config, metrics, conn, plan instanceof LocalReply ? undefined : plan.chosen, res.headersSent ? res.statusCode : 0, started,
        { tap: this.#opts.tap, trace, method: req.method, url: req.url, protocol: 'http1' });
    });
    plan = router.plan(req, conn);
    if (plan instanceof LocalReply) return reply(res, plan);
    // An HTTPRoute rule's `retry` replaces the node's statuses and attempts; the budget bounds both.
    const retryStatuses = plan.retry?.codes.length ? new Set(plan.retry.codes) : this.#opts.retryStatuses;
    const maxAttempts = plan.retry ? plan.retry.attempts + 1 : this.#opts.maxAttempts;
    const backoff = () => (plan.retry?.backoffMs ? delay(plan.retry.backoffMs) : undefined);
    budget.request();
    // Most requests have no body: no read to wait for (an await costs a turn of the microtask queue).
    const body = bodiless(req) ? NO_BODY : await replayableBody(req);
    // RequestMirror copies: fire-and-forget, they never delay or fail this request.
    mirrorHttp1(router, conn, plan, req, body);
    let overallTimedOut = false;
    if (plan.timeouts.request && !res.destroyed) {
      overall = setTimeout(() => {
        overallTimedOut = true;
        if (res.headersSent) res.destroy();
        else current?.settle({ kind: 'timeout' });
      }, plan.timeouts.request);
    }
    for (let attempt = 1; ; attempt++) {
      const endpoint = plan.next();
      if (endpoint instanceof LocalReply) return reply(res, endpoint);
      const done = router.balancer.start(endpoint.ip);
      const outcome = await this.#attempt(req, endpoint, body, plan.timeouts.backend, (f) => (current = f));
      // A retried status counts as a failure too: a remote pod that refuses connections
      // answers 503 from its node, and the balancer must learn to avoid it.
      done(outcome.kind !== 'response' || retryStatuses.has(outcome.response.statusCode ?? 0));
      if (overallTimedOut || res.destroyed) {
        if (outcome.kind === 'response') outcome.response.destroy();
        return reply(res, new LocalReply(504, `request timeout (${plan.timeouts.request} ms) reached`));
      }
      const canRetry = body !== undefined && attempt < maxAttempts;
      if (outcome.kind === 'connect-failed' && canRetry && budget.tryRetry()) {
        await backoff();
        continue;
      }
      if (outcome.kind === 'response' && retryStatuses.has(outcome.response.statusCode ?? 0) && canRetry && budget.tryRetry()) {
        // Read the refused response to its end so its connection goes back to the pool.
        outcome.response.resume();
        await backoff();
        continue;
      }
      clearTimeout(overall);
      switch (outcome.kind) {
        case 'response':
          return forwardResponse(outcome.response, res, plan.responseHeaders);
        case 'timeout':
          return reply(res, new LocalReply(504, `backend request timeout (${plan.timeouts.backend} ms) reached at ${endpoint.ip}:${endpoint.port}`));
        case 'connect-failed':
          log.warn('cannot connect to the upstream endpoint', { destination: `${endpoint.ip}:${endpoint.port}`, error: outcome.error.message });
          return reply(res, new LocalReply(503, `cannot connect to ${endpoint.ip}:${endpoint.port}: ${outcome.error.message}`));
        case 'failed':
          return reply(res, new LocalReply(502, `upstream ${endpoint.ip}:${endpoint.port} failed: ${outcome.error.message}`));
        case 'local':
          return reply(res, new LocalReply(outcome.status, outcome.reason));
      }
    }
  }

  #attempt(
    req: http.IncomingMessage, endpoint: Endpoint,
    body: Buffer | undefined, timeoutMs: number, expose: (flight: InFlight) => void,
  ): Promise<Outcome> {
    return new Promise((resolve) => {
      let settled = false;
      const proxyRequest = http.request({
        host: endpoint.ip, port: endpoint.port, method: req.method, path: req.url, headers: forwardedRequestHeaders(req), agent: this.#agentFor(endpoint), setHost: false,
      });
      const flight: InFlight = {
        proxyRequest,
        settle: (outcome) => {
          if (settled) {
            if (outcome.kind === 'response') outcome.response.destroy();
            return;
          }
          settled = true;
          clearTimeout(timer);
          if (outcome.kind === 'timeout') proxyRequest.destroy();
          resolve(outcome);
        },
      };
      const timer = timeoutMs ? setTimeout(() => flight.settle({ kind: 'timeout' }), timeoutMs) : undefined;
      expose(flight);
      proxyRequest.on('response', (response) => flight.settle({ kind: 'response', response }));
      proxyRequest.on('error', (err) => flight.settle({ kind: err instanceof UpstreamConnectError || closedWhileReused(proxyRequest, err) ? 'connect-failed' : 'failed', error: err }));
      if (body) proxyRequest.end(body);
      else req.pipe(proxyRequest);
    });
  }

  #onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const conn = this.#connections.get(socket);
    if (!conn) return void socket.destroy();
    const plan = this.#opts.router.plan(req, conn);
    const endpoint = plan instanceof LocalReply ? plan : plan.next();
    if (endpoint instanceof LocalReply) {
      socket.end(`HTTP/1.1 ${endpoint.status} ${http.STATUS_CODES[endpoint.status] ?? ''}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    this.#proxy.ws(req, socket, head, { target: { host: endpoint.ip, port: endpoint.port }, agent: this.#agentFor(endpoint) }, (err: Error) => {
      log.warn('WebSocket upgrade to the upstream failed', { destination: `${endpoint.ip}:${endpoint.port}`, error: err.message });
      socket.destroy();
    });
  }
}

/** The status for a request node's parser refused: as node's own server answers. */
function clientErrorStatus(code: string | undefined): number {
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  return 400;
}

/** The body of a request that has none, as sent and replayed (never written to). */
const NO_BODY = Buffer.alloc(0);

/** The whole body of a request that has one, when it is small enough to replay; undefined when it must stream. */
async function replayableBody(req: http.IncomingMessage): Promise<Buffer | undefined> {
  if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length']) > MAX_REPLAY_BODY) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A kept-alive connection the other side closed as this request went out on it
 * (a draining daemon ends idle connections; a server's keep-alive timeout): the
 * request never reached a server, so it is retried like a failed connect, as
 * node's documentation advises for `reusedSocket`.
 */
function closedWhileReused(request: http.ClientRequest | undefined, err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return request?.reusedSocket === true && (code === 'ECONNRESET' || code === 'EPIPE' || err.message === 'socket hang up');
}
