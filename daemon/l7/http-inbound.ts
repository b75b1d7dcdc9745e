// HTTP on the destination side, for ports a Service declares HTTP or HTTP/2:
// each request (HTTP/2: each stream) of a plaintext connection, or of a tunnel
// whose requests are needed (inbound.ts; other tunnels are spliced as TCP), is
// authorized with its method and path (AuthorizationPolicy `methods`,
// `paths` and their `not*`), answered 403 when denied, otherwise proxied to the
// pod over a keep-alive connection (HTTP/2: a session) of that tunnel with
// node:http (http1-forward.ts; http-proxy only for upgrades); the destination's
// request metrics are reported here.

import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from './http-proxy.ts';
import type { Service, Workload } from '../../core/types.ts';
import { logger } from '../../core/log.ts';
import type { Admission } from '../admission.ts';
import type { AuthorizationInput } from '../authorization.ts';
import type { DaemonMetrics } from '../metrics.ts';
import { PodDialer } from '../pod-dialer.ts';
import type { DeliveryOptions } from '../pod-socket.ts';
import { sourceKey } from '../fair-share.ts';
import type { FairShare } from '../fair-share.ts';
import { Http1Connections } from './http1-drain.ts';
import { UpstreamAgent } from './upstream-agent.ts';
import { connectionRequestLabels, endTrace, pathOf, publishRequest } from './request-metrics.ts';
import type { Tracing } from '../tracing.ts';
import type { TappedRequest } from './request-metrics.ts';
import type { Tap } from '../tap.ts';
import { serviceRef, workloadRef } from '../tap.ts';
import { socketLike } from './socket-like.ts';
import { NOT_FORWARDED, relayStream } from './h2-relay.ts';
import { LocalReply, replyHttp1, replyHttp2 } from './local-reply.ts';
import { bodiless, forwardResponse, forwardedRequestHeaders } from './http1-forward.ts';

const log = logger('http-inbound');
/**
 * A connection must complete a request head within 60 s of being handed over or
 * of its previous response (HTTP/2: send its SETTINGS within 60 s), the server's
 * own headersTimeout and keepAliveTimeout below. node checks headersTimeout only
 * for connections of a listening server, and this one is handed its connections
 * (tunnel streams, plaintext sockets) without ever listening: without this a
 * client that sent half a request head held its connection forever.
 */
const HEAD_TIMEOUT_MS = 60_000;
/**
 * Concurrent streams per HTTP/2 connection (a plaintext client's at 15006, or
 * a mesh client's inside one tunnel), advertised as
 * SETTINGS_MAX_CONCURRENT_STREAMS. 1,000, not the tunnels' 100: there our own
 * pool opens another session past the limit, here the client is an
 * application's HTTP/2 or gRPC channel, which queues requests past it (a
 * channel of long-lived gRPC streams would wait for ever at 100). 1,000 is the
 * concurrent requests a source pod may have in flight on its node
 * (source-limits.ts), so no client the source side admits is held up here,
 * while one connection can no longer open an unbounded number of streams, each
 * one a stream to the pod and nghttp2 state (node's default is 2^32 - 1).
 * Streams past it sent before our SETTINGS were acknowledged are refused with
 * REFUSED_STREAM; after the acknowledgement nghttp2 ends the session
 * (PROTOCOL_ERROR), as at 15008.
 */
export const H2_MAX_CONCURRENT_STREAMS = 1_000;

export interface InboundHttpConnection {
  /** The connection's L4 facts; each request adds its method and path. */
  authorization: AuthorizationInput;
  sourceWorkload?: Workload;
  destinationPrincipal: string;
  service?: Service;
  security: 'mutual_tls' | 'none';
  /** Plaintext clients get x-forwarded-for here; mesh clients got it from their node. */
  addForwardedFor: boolean;
}

interface Served {
  conn: InboundHttpConnection;
  agent: UpstreamAgent;
  /** Requests (or an upgrade) not finished yet; the head deadline runs only while there are none. */
  inFlight: number;
  headTimer?: NodeJS.Timeout;
}

interface ServedH2 {
  conn: InboundHttpConnection;
  /** The session to the pod: opened on the first stream, closed with the tunnel. */
  pod?: ClientHttp2Session;
  opening?: Promise<ClientHttp2Session>;
  closed?: boolean;
}

export interface HttpInboundOptions {
  dialer?: PodDialer;
  tap?: Tap;
  tracing?: Tracing;
  fairShare?: FairShare;
  /**
   * Count every request of meshed clients here too (`reporter="destination"`).
   * Without it a tunnel's HTTP is read only when something on this node needs
   * its requests (needsRequests); the source node reports every request.
   */
  requestMetrics?: boolean;
}

export class HttpInbound {
  readonly #admission: Admission;
  readonly #metrics: DaemonMetrics;
  readonly #server: http.Server;
  readonly #proxy = httpProxy.createProxyServer({});
  readonly #served = new WeakMap<object, Served>();
  readonly #h2Server = http2.createServer({ settings: { maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS } });
  readonly #servedH2 = new WeakMap<ServerHttp2Session, ServedH2>();
  /** Set while a connection is handed to the HTTP/2 server, which creates its session synchronously. */
  #handing: ServedH2 | undefined;
  /** See HEAD_TIMEOUT_MS; tests shorten it. */
  headTimeoutMs = HEAD_TIMEOUT_MS;

  readonly #dialer: PodDialer;
  readonly #fairShare?: FairShare;
  readonly #requestMetrics: boolean;
  readonly #tap: Tap | undefined;
  readonly #tracing: Tracing | undefined;
  readonly #http1: Http1Connections;
  /** HTTP/2 sessions of tunnels and plaintext clients, for GOAWAY on drain. */
  readonly #h2Sessions = new Set<ServerHttp2Session>();

  constructor(admission: Admission, metrics: DaemonMetrics, opts: HttpInboundOptions = {}) {
    this.#fairShare = opts.fairShare;
    this.#tap = opts.tap;
    this.#tracing = opts.tracing;
    this.#admission = admission;
    this.#dialer = opts.dialer ?? new PodDialer();
    this.#metrics = metrics;
    this.#requestMetrics = opts.requestMetrics === true;
    this.#server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 60_000 });
    this.#http1 = new Http1Connections(this.#server);
    this.#server.on('request', (req, res) => this.#onRequest(req, res));
    this.#server.on('upgrade', (req, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
    this.#server.on('clientError', (err, socket) => {
      log.debug('malformed HTTP in a tunnel', { error: err.message });
      socket.destroy();
    });
    this.#h2Server.on('session', (session) => {
      if (this.#handing) this.#servedH2.set(session, this.#handing);
      session.on('error', (err) => log.debug('HTTP/2 session error in a tunnel', { error: err.message }));
      this.#h2Sessions.add(session);
      session.on('close', () => this.#h2Sessions.delete(session));
      const timer = setTimeout(() => {
        log.debug('HTTP/2 connection closed: no SETTINGS in time', { timeoutMs: this.headTimeoutMs });
        session.destroy();
      }, this.headTimeoutMs);
      session.once('remoteSettings', () => clearTimeout(timer));
      session.on('close', () => clearTimeout(timer));
    });
    this.#h2Server.on('stream', (stream, headers) => this.#onH2Stream(stream, headers));
  }

  /**
   * Whether this node needs every request of its mesh tunnels, so none may be
   * spliced: it counts them (requestMetrics), taps them, or traces them. The
   * HBONE listener also reads a tunnel that policy refuses as a whole
   * (inbound.ts).
   */
  get needsRequests(): boolean {
    return this.#requestMetrics || this.#tap?.wantsRequests === true || this.#tracing?.recordsRequests === true;
  }

  /** Calls `fn` whenever requests become wanted that spliced tunnels would not show (a tap of request events). */
  onRequestsWanted(fn: () => void): () => void {
    return this.#tap?.onRequestsWanted(fn) ?? (() => {});
  }

  /** Clients move to the next daemon: HTTP/1 `connection: close` and idle connections ended, HTTP/2 GOAWAY. */
  drain(): void {
    this.#http1.drain();
    for (const session of this.#h2Sessions) session.close();
  }

  /** Serves HTTP/1 arriving on `downstream` (an accepted tunnel stream or socket), whose first bytes `head` were already read. */
  serveHttp1(downstream: Duplex, conn: InboundHttpConnection, head: Buffer): void {
    // One keep-alive agent per tunnel: its pod connections live and die with it.
    const avoidPort = downstream instanceof net.Socket ? downstream.remotePort : undefined;
    const agent = new UpstreamAgent(() => this.#connectPod(conn, { avoidPort }));
    if (!(downstream instanceof net.Socket)) socketLike(downstream);
    const served: Served = { conn, agent, inFlight: 0 };
    this.#served.set(downstream, served);
    this.#http1.add(downstream);
    this.#awaitHead(downstream, served);
    downstream.on('close', () => {
      clearTimeout(served.headTimer);
      agent.destroy();
    });
    this.#server.emit('connection', downstream);
    downstream.unshift(head);
    downstream.resume();
  }

  /** Serves HTTP/2 (prior knowledge: `head` holds the preface) arriving on `downstream`. */
  serveHttp2(downstream: Duplex, conn: InboundHttpConnection, head: Buffer): void {
    const served: ServedH2 = { conn };
    downstream.on('close', () => {
      served.closed = true;
      served.pod?.close();
    });
    downstream.unshift(head);
    this.#handing = served;
    try {
      this.#h2Server.emit('connection', downstream);
    } finally {
      this.#handing = undefined;
    }
  }

  #onH2Stream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', (err) => log.debug('HTTP/2 stream error in a tunnel', { error: err.message }));
    const served = this.#servedH2.get(stream.session as ServerHttp2Session);
    if (!served) return void stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    const { conn } = served;
    const started = performance.now();
    const trace = this.#tracing?.start('destination', headers, { method: headers[':method'] ?? 'GET', path: pathOf(headers[':path']) });
    stream.on('close', () => this.#record(conn, Number(stream.sentHeaders?.[':status'] ?? 0), started, {
      trace, method: headers[':method'], url: headers[':path'], protocol: 'http2', contentType: headers['content-type'],
      grpcStatus: () => {
        const status = stream.sentTrailers?.['grpc-status'] ?? stream.sentHeaders?.['grpc-status'];
        return status === undefined ? undefined : String(status);
      },
    }));
    const denied = this.#deny({ method: headers[':method'], url: headers[':path'] }, conn);
    if (denied) return replyHttp2(stream, denied);
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) if (!NOT_FORWARDED.has(name) && value !== undefined) out[name] = value;
    const { destination, port } = conn.authorization;
    this.#podSession(served).then(
      (pod) => {
        if (!stream.destroyed) relayStream(stream, pod.request(out), undefined, () => {});
      },
      (err: Error) => replyHttp2(stream, new LocalReply(503, `cannot reach ${destination.namespace}/${destination.name} at ${destination.ip}:${port}: ${err.message}`)),
    );
  }

  /**
   * A connection to the tunnel's pod, read under the verified source pod's fair
   * share as a TCP tunnel's is (inbound.ts): the pod's answers to a flood of
   * requests are what this node reads for it.
   */
  #connectPod(conn: InboundHttpConnection, opts?: DeliveryOptions): Promise<net.Socket> {
    const { destination, port, sourceIp } = conn.authorization;
    return this.#dialer.connect(destination.ip, port, sourceIp, opts).then((socket) => {
      this.#fairShare?.register(sourceKey(conn.sourceWorkload, sourceIp), socket, 'answers');
      return socket;
    });
  }

  /** The tunnel's HTTP/2 session to the pod, opened (from inside the pod's namespace when captured there) on first use. */
  #podSession(served: ServedH2): Promise<ClientHttp2Session> {
    if (served.pod && !served.pod.closed && !served.pod.destroyed) return Promise.resolve(served.pod);
    const { destination, port } = served.conn.authorization;
    served.opening ??= this.#connectPod(served.conn).then(
      (socket) => {
        const pod = http2.connect(`http://${destination.ip}:${port}`, { createConnection: () => socket });
        pod.on('error', (err) => log.debug('HTTP/2 session to the pod failed', { destination: `${destination.ip}:${port}`, error: err.message }));
        served.pod = pod;
        served.opening = undefined;
        if (served.closed) pod.close();
        return pod;
      },
      (err: Error) => {
        served.opening = undefined;
        throw err;
      },
    );
    return served.opening;
  }

  /** The request's admission; the 403 to answer when denied. */
  #deny(req: { method?: string; url?: string }, conn: InboundHttpConnection): LocalReply | undefined {
    const path = new URL(req.url ?? '/', 'http://request.invalid').pathname;
    const decision = this.#admission.admit({ ...conn.authorization, http: { method: req.method ?? 'GET', path } }, { what: 'HTTP request', log });
    return decision.allowed ? undefined : new LocalReply(403, `RBAC: access denied: ${decision.reason}`);
  }

  /** Closes `downstream` unless a complete request head arrives within headTimeoutMs. */
  #awaitHead(downstream: Duplex, served: Served): void {
    clearTimeout(served.headTimer);
    served.headTimer = setTimeout(() => {
      const { destination, port } = served.conn.authorization;
      log.debug('HTTP connection closed: no complete request head in time', { destination: `${destination.ip}:${port}`, timeoutMs: this.headTimeoutMs });
      downstream.destroy();
    }, this.headTimeoutMs);
  }

  #onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const served = this.#served.get(req.socket);
    if (!served) return void res.destroy();
    clearTimeout(served.headTimer);
    served.inFlight++;
    const socket = req.socket;
    const { conn, agent } = served;
    const started = performance.now();
    const trace = this.#tracing?.start('destination', req.headers, { method: req.method ?? 'GET', path: pathOf(req.url) });
    let upstream: http.ClientRequest | undefined;
    // One listener per request, not one per job.
    res.on('close', () => {
      // The client went away first: so does the request to the pod.
      if (!res.writableFinished) upstream?.destroy();
      if (--served.inFlight === 0 && !socket.destroyed) this.#awaitHead(socket, served);
      this.#record(conn, res.headersSent ? res.statusCode : 0, started, { trace, method: req.method, url: req.url, protocol: 'http1' });
    });
    const denied = this.#deny(req, conn);
    if (denied) return replyHttp1(res, denied);
    const { destination, port } = conn.authorization;
    upstream = http.request({
      host: destination.ip, port, method: req.method, path: req.url, agent, setHost: false,
      headers: forwardedRequestHeaders(req, conn.addForwardedFor),
    });
    upstream.on('response', (response) => forwardResponse(response, res));
    // Once the response has begun, replyHttp1 only ends the client's connection.
    upstream.on('error', (err) => replyHttp1(res, new LocalReply(503, `cannot reach ${destination.namespace}/${destination.name} at ${destination.ip}:${port}: ${err.message}`)));
    // A bodiless request (most) has nothing to pipe; node's server discards its empty stream.
    if (bodiless(req)) upstream.end();
    else req.pipe(upstream);
  }

  #onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const served = this.#served.get(socket);
    if (!served) return void socket.destroy();
    // The connection is the upgraded protocol's from here: no more heads to wait for.
    clearTimeout(served.headTimer);
    served.inFlight++;
    const { conn, agent } = served;
    if (this.#deny(req, conn)) {
      socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const { destination, port } = conn.authorization;
    this.#proxy.ws(req, socket, head, { target: { host: destination.ip, port }, agent, xfwd: conn.addForwardedFor }, (err: Error) => {
      log.warn('WebSocket upgrade to the pod failed', { destination: `${destination.ip}:${port}`, error: err.message });
      socket.destroy();
    });
  }

  #record(conn: InboundHttpConnection, responseCode: number, started: number, tapped: TappedRequest): void {
    const labels = connectionRequestLabels(conn, {
      reporter: 'destination', sourceWorkload: conn.sourceWorkload, sourcePrincipal: conn.authorization.sourcePrincipal,
      destinationWorkload: conn.authorization.destination, destinationPrincipal: conn.destinationPrincipal, service: conn.service,
      security: conn.security, responseCode,
    });
    const seconds = (performance.now() - started) / 1000;
    this.#metrics.requests.inc(labels);
    this.#metrics.requestDuration.observe(labels, seconds);
    if (this.#tap?.active || tapped.trace) {
      const { sourceIp, sourcePrincipal, destination, port } = conn.authorization;
      const ends = {
        source: { ip: sourceIp, workload: workloadRef(conn.sourceWorkload), identity: sourcePrincipal },
        destination: { ip: destination.ip, port, workload: workloadRef(destination), identity: conn.destinationPrincipal, service: serviceRef(conn.service) },
      };
      if (this.#tap?.active) publishRequest({ ...tapped, tap: this.#tap }, 'destination', responseCode, seconds, ends, conn.security);
      if (tapped.trace) endTrace(tapped.trace, responseCode, ends);
    }
  }
}
