// HTTP/2 with prior knowledge (h2c, gRPC) on the outbound side: the client's
// connection is served by a node:http2 server and each stream is routed on its
// own (HTTPRoute, weights, peak-EWMA endpoint) onto a pooled HTTP/2 session per
// (source identity, endpoint), carried in HBONE for remote pods. Headers, data
// and trailers pass through as they come, so grpc-status arrives untouched.
// Streams are not retried: a gRPC call may have been processed.

import http2 from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConfigStore } from '../config-store.ts';
import { logger } from '../../core/log.ts';
import type { DaemonMetrics } from '../metrics.ts';
import { NOT_FORWARDED, relayStream } from './h2-relay.ts';
import { pathOf, recordSourceRequest } from './request-metrics.ts';
import { mirrorHttp2 } from './mirror.ts';
import type { Tap } from '../tap.ts';
import type { Tracing } from '../tracing.ts';
import { LocalReply, replyHttp2 as reply } from './local-reply.ts';
import { appendToList } from './filters.ts';
import type { Endpoint, HttpClientConnection, RequestRouter } from './request-router.ts';
import type { SourceLimits } from '../source-limits.ts';
import { REASON_HEADER } from '../hbone-settings.ts';
import { tunnelDraining } from '../hbone-pool.ts';

const log = logger('h2-outbound');
const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** An endpoint's pooled session, and the connection it runs over once connected. */
interface PooledSession {
  session: Promise<ClientHttp2Session>;
  transport?: Duplex;
}

export interface H2OutboundOptions {
  config: ConfigStore;
  metrics: DaemonMetrics;
  router: RequestRouter;
  /** The node's tap: a `request` event per stream while someone listens. */
  tap?: Tap;
  /** traceparent, x-request-id and a span per stream (tracing.ts). */
  tracing?: Tracing;
  /** Concurrent streams per source pod; over it, 503. */
  limits?: SourceLimits;
}

export class H2Outbound {
  readonly #opts: H2OutboundOptions;
  readonly #server = http2.createServer();
  readonly #connections = new WeakMap<ServerHttp2Session, HttpClientConnection>();
  readonly #sessions = new Map<string, PooledSession>();
  /** The clients' sessions, for GOAWAY on drain. */
  readonly #clientSessions = new Set<ServerHttp2Session>();
  #draining = false;
  /** Set while a connection is handed to the server, which creates its session synchronously. */
  #handing: HttpClientConnection | undefined;

  constructor(opts: H2OutboundOptions) {
    this.#opts = opts;
    this.#server.on('session', (session) => {
      if (this.#handing) this.#connections.set(session, this.#handing);
      session.on('error', (err) => log.debug('client HTTP/2 session error', { error: err.message }));
      this.#clientSessions.add(session);
      session.on('close', () => this.#clientSessions.delete(session));
      // Opened during a drain: the client learns at once to go elsewhere.
      if (this.#draining) session.once('connect', () => session.close());
    });
    this.#server.on('stream', (stream, headers) => {
      this.#onStream(stream, headers).catch((err: Error) => {
        log.debug('stream abandoned', { error: err.message });
        stream.destroy();
      });
    });
  }

  /** Takes over a captured connection that opened with the HTTP/2 preface (`head`, already read). */
  handle(client: net.Socket, conn: HttpClientConnection, head: Buffer): void {
    // The session reads what is buffered on the socket first.
    client.unshift(head);
    this.#handing = conn;
    try {
      this.#server.emit('connection', client);
    } finally {
      this.#handing = undefined;
    }
  }

  /** GOAWAY to every client session: open streams finish, new ones go to the next daemon. */
  drain(): void {
    this.#draining = true;
    for (const session of this.#clientSessions) session.close();
  }

  close(): void {
    for (const pooled of this.#sessions.values()) pooled.session.then((s) => s.destroy(), () => {});
    this.#sessions.clear();
  }

  async #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', (err) => log.debug('client stream error', { error: err.message }));
    const conn = this.#connections.get(stream.session as ServerHttp2Session);
    if (!conn) return void stream.close(NGHTTP2_INTERNAL_ERROR);
    const slot = this.#opts.limits?.startRequest(conn.source, conn.sourceIdentity);
    if (typeof slot === 'string') return reply(stream, new LocalReply(503, slot, { [REASON_HEADER]: 'source_limit' }));
    if (slot) stream.on('close', slot);
    const { config, metrics, router } = this.#opts;
    const started = performance.now();
    const trace = this.#opts.tracing?.start('source', headers, { method: headers[':method'] ?? 'GET', path: pathOf(headers[':path']) });
    const request = { url: headers[':path'], method: headers[':method'], headers: headers as Record<string, string | string[] | undefined> };
    const plan = router.plan(request, conn);
    stream.on('close', () => recordSourceRequest(config, metrics, conn, plan instanceof LocalReply ? undefined : plan.chosen, Number(stream.sentHeaders?.[':status'] ?? 0), started, {
      tap: this.#opts.tap, trace, method: headers[':method'], url: headers[':path'], protocol: 'http2', contentType: headers['content-type'],
      grpcStatus: () => grpcStatusOf(stream),
    }));
    if (plan instanceof LocalReply) return reply(stream, plan);
    const endpoint = plan.next();
    if (endpoint instanceof LocalReply) return reply(stream, endpoint);
    // RequestMirror copies: fire-and-forget, they never delay or fail this stream.
    mirrorHttp2(router, conn, plan, request, forwardedHeaders(request, conn), stream, (e) => this.#session(e));
    const done = router.balancer.start(endpoint.ip);
    let session: ClientHttp2Session;
    try {
      session = await this.#session(endpoint);
    } catch (err) {
      done(true);
      return reply(stream, new LocalReply(503, `cannot connect to ${endpoint.ip}:${endpoint.port}: ${(err as Error).message}`));
    }
    if (stream.destroyed) return done();
    const upstreamStream = session.request(forwardedHeaders(request, conn));
    const timeoutMs = minPositive(plan.timeouts.backend, plan.timeouts.request);
    const timer = timeoutMs ? setTimeout(() => {
      upstreamStream.close(NGHTTP2_CANCEL);
      if (stream.headersSent) stream.close(NGHTTP2_CANCEL);
      else reply(stream, new LocalReply(504, `request timeout (${timeoutMs} ms) reached at ${endpoint.ip}:${endpoint.port}`));
    }, timeoutMs) : undefined;
    relayStream(stream, upstreamStream, plan.responseHeaders, () => {
      clearTimeout(timer);
      done();
    });
  }

  /**
   * The pooled HTTP/2 session to an endpoint, opened over the endpoint's own
   * connection (HBONE or TCP); a session whose tunnel is draining (tunnelDraining)
   * is closed (its open streams finish) and another opened.
   */
  #session(endpoint: Endpoint): Promise<ClientHttp2Session> {
    const key = endpoint.poolKey;
    const cached = this.#sessions.get(key);
    if (cached && !(cached.transport && tunnelDraining(cached.transport))) return cached.session;
    if (cached) void cached.session.then((s) => s.close(), () => {});
    // Connected after `pooled` exists.
    const opening = endpoint.connect().then((transport) => new Promise<ClientHttp2Session>((resolve, reject) => {
      pooled.transport = transport;
      const session = http2.connect(`http://${endpoint.ip}:${endpoint.port}`, { createConnection: () => transport as net.Socket });
      const forget = () => {
        if (this.#sessions.get(key) === pooled) this.#sessions.delete(key);
      };
      session.once('connect', () => resolve(session));
      session.once('error', (err) => {
        forget();
        reject(err);
      });
      session.once('goaway', forget);
      session.on('close', forget);
    }));
    const pooled: PooledSession = { session: opening };
    this.#sessions.set(key, pooled);
    opening.catch(() => {
      if (this.#sessions.get(key) === pooled) this.#sessions.delete(key);
    });
    return opening;
  }

}

/** The request as the upstream gets it: filters applied, x-forwarded-for appended. */
function forwardedHeaders(req: { url?: string; headers: Record<string, string | string[] | undefined> }, conn: HttpClientConnection): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!NOT_FORWARDED.has(name) && value !== undefined) out[name] = value;
  out[':path'] = req.url ?? '/';
  out['x-forwarded-for'] = appendToList(req.headers['x-forwarded-for'], conn.sourceIp);
  return out;
}

/** The grpc-status a stream answered: in its trailers, or in the headers of a trailers-only answer. */
function grpcStatusOf(stream: ServerHttp2Stream): string | undefined {
  const status = stream.sentTrailers?.['grpc-status'] ?? stream.sentHeaders?.['grpc-status'];
  return status === undefined ? undefined : String(status);
}

function minPositive(a: number, b: number): number {
  if (!a) return b;
  if (!b) return a;
  return Math.min(a, b);
}
