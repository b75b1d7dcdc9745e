// HTTP on the outbound side (HTTP/2 streams are relayed by h2-outbound.ts): connections the detector (or a Service's
// declared protocol) found to carry HTTP are parsed here, and every request is
// routed on its own: HTTPRoute matching and filters, a weighted backend, a
// peak-EWMA endpoint choice, then http-proxy over a keep-alive agent for that
// endpoint whose connections are HBONE streams (remote pods) or sockets (pods on
// this node, authorized in-process per request). Connect failures and
// configured 5xx are retried within a budget when the body could be kept for
// replay; responses and bodies stream through unbuffered.

import http from 'node:http';
import type net from 'node:net';
import { Readable } from 'node:stream';
import httpProxy from 'http-proxy';
import { LRUCache } from 'lru-cache';
import type { HeaderModifier } from '../../core/types.ts';
import type { ConfigStore } from '../config-store.ts';
import { logger } from '../../core/log.ts';
import type { ConnectionTracker } from '../connection-tracker.ts';
import type { DaemonMetrics } from '../metrics.ts';
import type { HbonePool } from '../hbone-pool.ts';
import { modifyHeaders } from './filters.ts';
import { PeakEwmaBalancer } from './peak-ewma.ts';
import { RetryBudget } from './retry-budget.ts';
import { UpstreamAgent, UpstreamConnectError } from './upstream-agent.ts';
import { recordSourceRequest } from './request-metrics.ts';
import { LocalReply, RequestRouter } from './request-router.ts';
import { H2Outbound } from './h2-outbound.ts';
import type { HttpClientConnection, Upstream } from './request-router.ts';

const log = logger('http-outbound');

/** Bodies up to this size are kept for replay; larger ones stream and are never retried. */
export const MAX_REPLAY_BODY = 64 * 1024;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

export interface HttpOutboundOptions {
  config: ConfigStore;
  pool: HbonePool;
  tracker: ConnectionTracker;
  metrics: DaemonMetrics;
  /** Upstream statuses retried (default 503: the server says it did not process the request). */
  retryStatuses?: number[];
  /** Attempts per request including the first (default 3). */
  maxAttempts?: number;
  budget?: RetryBudget;
  balancer?: PeakEwmaBalancer;
}

type Outcome =
  | { kind: 'response'; response: http.IncomingMessage }
  | { kind: 'connect-failed' | 'failed'; error: Error }
  | { kind: 'timeout' }
  | { kind: 'local'; status: number; reason: string };

interface InFlight {
  proxyRequest?: http.ClientRequest;
  settle(outcome: Outcome): void;
}

export class HttpOutbound {
  readonly #opts: HttpOutboundOptions;
  readonly #server: http.Server;
  readonly #proxy = httpProxy.createProxyServer({ xfwd: true, selfHandleResponse: true });
  readonly #connections = new WeakMap<net.Socket, HttpClientConnection>();
  readonly #inFlight = new WeakMap<http.IncomingMessage, InFlight>();
  readonly #agents = new LRUCache<string, UpstreamAgent>({ max: 4096, dispose: (agent) => agent.destroy() });
  readonly #balancer: PeakEwmaBalancer;
  readonly #router: RequestRouter;
  readonly #h2: H2Outbound;
  readonly #budget: RetryBudget;
  readonly #retryStatuses: Set<number>;
  readonly #maxAttempts: number;

  constructor(opts: HttpOutboundOptions) {
    this.#opts = opts;
    this.#balancer = opts.balancer ?? new PeakEwmaBalancer();
    this.#router = new RequestRouter(opts.config, opts.pool, opts.metrics, this.#balancer);
    this.#h2 = new H2Outbound({ config: opts.config, tracker: opts.tracker, metrics: opts.metrics, router: this.#router, balancer: this.#balancer });
    this.#budget = opts.budget ?? new RetryBudget();
    this.#retryStatuses = new Set(opts.retryStatuses ?? [503]);
    this.#maxAttempts = opts.maxAttempts ?? 3;
    // Never listens: captured sockets are handed to it. No server-side timeouts: the
    // application's own client decides how long it waits.
    this.#server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 60_000 });
    this.#server.on('request', (req, res) => {
      // A client that aborts while its body is read ends only its own request.
      this.#onRequest(req, res).catch((err: Error) => {
        log.debug('request abandoned', { error: err.message });
        res.destroy();
      });
    });
    this.#server.on('upgrade', (req, socket, head) => this.#onUpgrade(req, socket as net.Socket, head));
    this.#server.on('clientError', (err, socket) => {
      log.debug('malformed HTTP from client', { error: err.message });
      if (!socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    });
    this.#proxy.on('proxyReq', (proxyRequest, req) => {
      const flight = this.#inFlight.get(req);
      if (flight) flight.proxyRequest = proxyRequest;
    });
    this.#proxy.on('proxyRes', (response, req) => this.#inFlight.get(req)?.settle({ kind: 'response', response }));
  }

  /** Takes over a captured connection whose first bytes (`head`, already read) are HTTP/1 or the HTTP/2 preface. */
  handle(client: net.Socket, conn: HttpClientConnection, head: Buffer, protocol: 'http1' | 'http2' = 'http1'): void {
    if (protocol === 'http2') return this.#h2.handle(client, conn, head);
    this.#connections.set(client, conn);
    const tracked = this.#opts.tracker.open({
      listener: 'outbound', reporter: 'source', sourceIp: conn.sourceIp, sourceWorkload: conn.source, sourcePrincipal: conn.sourceIdentity,
      destinationIp: conn.dstIp, destinationPort: conn.dstPort, destinationWorkload: this.#opts.config.workloadByIp(conn.dstIp),
      destinationPrincipal: null, service: this.#opts.config.serviceByVip(conn.dstIp), security: 'mutual_tls',
      bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
      destroy: () => client.destroy(),
    });
    client.once('close', () => tracked.finish());
    this.#server.emit('connection', client);
    // The detector paused the socket; the parser reads the bytes it took first.
    client.unshift(head);
    client.resume();
  }

  /** Closes pooled upstream connections. */
  close(): void {
    this.#h2.close();
    this.#agents.clear();
    this.#proxy.close();
  }

  /** The keep-alive agent of (source identity, endpoint): its connections carry that identity. */
  #agentFor(conn: HttpClientConnection, upstream: Upstream): UpstreamAgent {
    const key = `${conn.sourceIdentity}|${upstream.ip}:${upstream.port}`;
    let agent = this.#agents.get(key);
    if (!agent) {
      agent = new UpstreamAgent(() => this.#router.connect(conn, upstream));
      this.#agents.set(key, agent);
    }
    return agent;
  }

  async #onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const conn = this.#connections.get(req.socket as net.Socket);
    if (!conn) return void res.destroy();
    const started = performance.now();
    let reportedUpstream: Upstream | undefined;
    res.once('close', () => recordSourceRequest(this.#opts.config, this.#opts.metrics, conn, reportedUpstream, res.headersSent ? res.statusCode : 0, started));
    const routed = this.#router.route(req, conn);
    if (routed instanceof LocalReply) return reply(res, routed);
    this.#budget.request();
    const body = await replayableBody(req);
    let overallTimedOut = false;
    let current: InFlight | undefined;
    const overall = routed.timeouts.request
      ? setTimeout(() => {
          overallTimedOut = true;
          if (res.headersSent) res.destroy();
          else current?.settle({ kind: 'timeout' });
        }, routed.timeouts.request)
      : undefined;
    res.once('close', () => {
      clearTimeout(overall);
      // The client went away: stop the attempt in flight.
      if (!res.writableFinished) current?.proxyRequest?.destroy();
    });
    const tried = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      const upstream = this.#router.upstream(routed.target, tried);
      if (upstream instanceof LocalReply) return reply(res, upstream);
      reportedUpstream = upstream;
      tried.add(upstream.ip);
      const denied = this.#router.authorizeLocal(req, conn, upstream);
      if (denied) return reply(res, denied);
      const done = this.#balancer.start(upstream.ip);
      const outcome = await this.#attempt(req, res, conn, upstream, body, routed.timeouts.backend, (f) => (current = f));
      // A retried status counts as a failure too: a remote pod that refuses connections
      // answers 503 from its node, and the balancer must learn to avoid it.
      done(outcome.kind !== 'response' || this.#retryStatuses.has(outcome.response.statusCode ?? 0));
      if (overallTimedOut || res.destroyed) {
        if (outcome.kind === 'response') outcome.response.destroy();
        return reply(res, new LocalReply(504, `request timeout (${routed.timeouts.request} ms) reached`));
      }
      const canRetry = body !== undefined && attempt < this.#maxAttempts;
      if (outcome.kind === 'connect-failed' && canRetry && this.#budget.tryRetry()) continue;
      if (outcome.kind === 'response' && this.#retryStatuses.has(outcome.response.statusCode ?? 0) && canRetry && this.#budget.tryRetry()) {
        // Read the refused response to its end so its connection goes back to the pool.
        outcome.response.resume();
        continue;
      }
      clearTimeout(overall);
      switch (outcome.kind) {
        case 'response':
          return forwardResponse(outcome.response, res, routed.responseHeaders);
        case 'timeout':
          return reply(res, new LocalReply(504, `backend request timeout (${routed.timeouts.backend} ms) reached at ${upstream.ip}:${upstream.port}`));
        case 'connect-failed':
          log.warn('cannot connect to the upstream endpoint', { destination: `${upstream.ip}:${upstream.port}`, error: outcome.error.message });
          return reply(res, new LocalReply(503, `cannot connect to ${upstream.ip}:${upstream.port}: ${outcome.error.message}`));
        case 'failed':
          return reply(res, new LocalReply(502, `upstream ${upstream.ip}:${upstream.port} failed: ${outcome.error.message}`));
        case 'local':
          return reply(res, new LocalReply(outcome.status, outcome.reason));
      }
    }
  }

  #attempt(
    req: http.IncomingMessage, res: http.ServerResponse, conn: HttpClientConnection, upstream: Upstream,
    body: Buffer | undefined, timeoutMs: number, expose: (flight: InFlight) => void,
  ): Promise<Outcome> {
    return new Promise((resolve) => {
      let settled = false;
      const flight: InFlight = {
        settle: (outcome) => {
          if (settled) {
            if (outcome.kind === 'response') outcome.response.destroy();
            return;
          }
          settled = true;
          clearTimeout(timer);
          this.#inFlight.delete(req);
          if (outcome.kind === 'timeout') flight.proxyRequest?.destroy();
          resolve(outcome);
        },
      };
      const timer = timeoutMs ? setTimeout(() => flight.settle({ kind: 'timeout' }), timeoutMs) : undefined;
      this.#inFlight.set(req, flight);
      expose(flight);
      this.#proxy.web(req, res, {
        target: { host: upstream.ip, port: upstream.port },
        agent: this.#agentFor(conn, upstream),
        buffer: body ? Readable.from(body.length ? [body] : []) : undefined,
      }, (err: Error) => flight.settle({ kind: err instanceof UpstreamConnectError ? 'connect-failed' : 'failed', error: err }));
    });
  }

  #onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const conn = this.#connections.get(socket);
    if (!conn) return void socket.destroy();
    const routed = this.#router.route(req, conn);
    const upstream = routed instanceof LocalReply ? routed : this.#router.upstream(routed.target, new Set());
    const refusal = upstream instanceof LocalReply ? upstream : this.#router.authorizeLocal(req, conn, upstream);
    if (refusal || upstream instanceof LocalReply) {
      const r = refusal ?? (upstream as LocalReply);
      socket.end(`HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status] ?? ''}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    this.#proxy.ws(req, socket, head, { target: { host: upstream.ip, port: upstream.port }, agent: this.#agentFor(conn, upstream) }, (err: Error) => {
      log.warn('WebSocket upgrade to the upstream failed', { destination: `${upstream.ip}:${upstream.port}`, error: err.message });
      socket.destroy();
    });
  }

}

/** The whole body when it is small enough to replay (or absent); undefined when it must stream. */
async function replayableBody(req: http.IncomingMessage): Promise<Buffer | undefined> {
  const length = req.headers['content-length'];
  const chunked = req.headers['transfer-encoding'] !== undefined;
  if (!chunked && length === undefined) return Buffer.alloc(0);
  if (chunked || Number(length) > MAX_REPLAY_BODY) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function forwardResponse(response: http.IncomingMessage, res: http.ServerResponse, modifier: HeaderModifier | undefined): void {
  const headers: Record<string, string | string[] | undefined> = {};
  for (const [name, value] of Object.entries(response.headers)) if (!HOP_BY_HOP.has(name)) headers[name] = value;
  if (modifier) modifyHeaders(headers, modifier);
  res.writeHead(response.statusCode ?? 502, response.statusMessage, headers as http.OutgoingHttpHeaders);
  // Headers go out now: a server-sent event stream must not wait for its first event.
  res.flushHeaders();
  response.on('error', () => res.destroy());
  response.pipe(res, { end: false });
  response.once('end', () => {
    if (Object.keys(response.trailers).length) res.addTrailers(response.trailers as Record<string, string>);
    res.end();
  });
}

function reply(res: http.ServerResponse, r: LocalReply): void {
  if (res.headersSent || res.destroyed) return void res.destroy();
  const body = r.reason ? `${r.reason}\n` : '';
  res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...r.headers });
  res.end(body);
}
