// HTTP/2 with prior knowledge (h2c, gRPC) on the outbound side: the client's
// connection is served by a node:http2 server and each stream is routed on its
// own (HTTPRoute, weights, peak-EWMA endpoint) onto a pooled HTTP/2 session per
// (source identity, endpoint), carried in HBONE for remote pods. Headers, data
// and trailers pass through as they come, so grpc-status arrives untouched.
// Streams are not retried: a gRPC call may have been processed.

import http2 from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { ConfigStore } from '../config-store.ts';
import { logger } from '../../core/log.ts';
import type { ConnectionTracker } from '../connection-tracker.ts';
import type { DaemonMetrics } from '../metrics.ts';
import { relayStream, replyLocally as reply } from './h2-relay.ts';
import type { PeakEwmaBalancer } from './peak-ewma.ts';
import { recordSourceRequest } from './request-metrics.ts';
import { LocalReply } from './request-router.ts';
import { NOT_FORWARDED } from './h2-relay.ts';
import type { HttpClientConnection, RequestRouter, Upstream } from './request-router.ts';

const log = logger('h2-outbound');
const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;

export interface H2OutboundOptions {
  config: ConfigStore;
  tracker: ConnectionTracker;
  metrics: DaemonMetrics;
  router: RequestRouter;
  balancer: PeakEwmaBalancer;
}

export class H2Outbound {
  readonly #opts: H2OutboundOptions;
  readonly #server = http2.createServer();
  readonly #connections = new WeakMap<ServerHttp2Session, HttpClientConnection>();
  readonly #sessions = new Map<string, Promise<ClientHttp2Session>>();
  /** Set while a connection is handed to the server, which creates its session synchronously. */
  #handing: HttpClientConnection | undefined;

  constructor(opts: H2OutboundOptions) {
    this.#opts = opts;
    this.#server.on('session', (session) => {
      if (this.#handing) this.#connections.set(session, this.#handing);
      session.on('error', (err) => log.debug('client HTTP/2 session error', { error: err.message }));
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
    const { config, tracker } = this.#opts;
    const tracked = tracker.open({
      listener: 'outbound', reporter: 'source', sourceIp: conn.sourceIp, sourceWorkload: conn.source, sourcePrincipal: conn.sourceIdentity,
      destinationIp: conn.dstIp, destinationPort: conn.dstPort, destinationWorkload: config.workloadByIp(conn.dstIp),
      destinationPrincipal: null, service: config.serviceByVip(conn.dstIp), security: 'mutual_tls',
      bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
      destroy: () => client.destroy(),
    });
    client.once('close', () => tracked.finish());
    // The session reads what is buffered on the socket first.
    client.unshift(head);
    this.#handing = conn;
    try {
      this.#server.emit('connection', client);
    } finally {
      this.#handing = undefined;
    }
  }

  close(): void {
    for (const pending of this.#sessions.values()) pending.then((s) => s.destroy(), () => {});
    this.#sessions.clear();
  }

  async #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', (err) => log.debug('client stream error', { error: err.message }));
    const conn = this.#connections.get(stream.session as ServerHttp2Session);
    if (!conn) return void stream.close(NGHTTP2_INTERNAL_ERROR);
    const started = performance.now();
    let reported: Upstream | undefined;
    stream.once('close', () => recordSourceRequest(this.#opts.config, this.#opts.metrics, conn, reported, Number(stream.sentHeaders?.[':status'] ?? 0), started));
    const { router, balancer } = this.#opts;
    const request = { url: headers[':path'], method: headers[':method'], headers: headers as Record<string, string | string[] | undefined> };
    const routed = router.route(request, conn);
    if (routed instanceof LocalReply) return reply(stream, routed);
    const upstream = router.upstream(routed.target, new Set());
    if (upstream instanceof LocalReply) return reply(stream, upstream);
    reported = upstream;
    const denied = router.authorizeLocal(request, conn, upstream);
    if (denied) return reply(stream, denied);
    const done = balancer.start(upstream.ip);
    let session: ClientHttp2Session;
    try {
      session = await this.#session(conn, upstream);
    } catch (err) {
      done(true);
      return reply(stream, new LocalReply(503, `cannot connect to ${upstream.ip}:${upstream.port}: ${(err as Error).message}`));
    }
    if (stream.destroyed) return done();
    const upstreamStream = session.request(forwardedHeaders(request, conn));
    const timeoutMs = minPositive(routed.timeouts.backend, routed.timeouts.request);
    const timer = timeoutMs ? setTimeout(() => {
      upstreamStream.close(NGHTTP2_CANCEL);
      if (stream.headersSent) stream.close(NGHTTP2_CANCEL);
      else reply(stream, new LocalReply(504, `request timeout (${timeoutMs} ms) reached at ${upstream.ip}:${upstream.port}`));
    }, timeoutMs) : undefined;
    relayStream(stream, upstreamStream, routed.responseHeaders, () => {
      clearTimeout(timer);
      done();
    });
  }

  /** The pooled HTTP/2 session to an endpoint, opened over HBONE or TCP as the router connects. */
  #session(conn: HttpClientConnection, upstream: Upstream): Promise<ClientHttp2Session> {
    const key = `${conn.sourceIdentity}|${upstream.ip}:${upstream.port}`;
    const cached = this.#sessions.get(key);
    if (cached) return cached;
    const opening = this.#opts.router.connect(conn, upstream).then((transport) => new Promise<ClientHttp2Session>((resolve, reject) => {
      const session = http2.connect(`http://${upstream.ip}:${upstream.port}`, { createConnection: () => transport as net.Socket });
      const forget = () => {
        if (this.#sessions.get(key) === opening) this.#sessions.delete(key);
      };
      session.once('connect', () => resolve(session));
      session.once('error', (err) => {
        forget();
        reject(err);
      });
      session.once('goaway', forget);
      session.once('close', forget);
    }));
    this.#sessions.set(key, opening);
    opening.catch(() => {
      if (this.#sessions.get(key) === opening) this.#sessions.delete(key);
    });
    return opening;
  }

}

/** The request as the upstream gets it: filters applied, x-forwarded-for appended. */
function forwardedHeaders(req: { url?: string; headers: Record<string, string | string[] | undefined> }, conn: HttpClientConnection): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!NOT_FORWARDED.has(name) && value !== undefined) out[name] = value;
  out[':path'] = req.url ?? '/';
  const xff = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${conn.sourceIp}` : conn.sourceIp;
  return out;
}

function minPositive(a: number, b: number): number {
  if (!a) return b;
  if (!b) return a;
  return Math.min(a, b);
}
