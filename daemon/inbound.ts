// The HBONE listener (15008): mutual-TLS HTTP/2 CONNECT tunnels from other nodes.
// The certificate to serve is chosen by the pod IP the peer dialled (its original
// destination before our REDIRECT), so no SNI is needed. Each CONNECT stream is
// authorized against the destination's policies and spliced to the local pod;
// on a port declared HTTP, read request by request only when policy refuses
// the tunnel as a whole or the node needs its requests (HttpInbound.needsRequests).
//
// What a peer can claim and hold is bounded here: the source address it names in
// `Forwarded: for=` counts only when it is a workload of the identity its
// certificate proves; a socket that has not finished TLS and sent its HTTP/2
// SETTINGS within the handshake deadline is closed; a session carries at most
// 100 streams and small header lists and is closed (GOAWAY) after two minutes
// with no open stream; one peer holds at most a fixed number of
// open tunnels to this node's pods.

import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import type { Http2Session, IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { CertSource } from '../core/cert-source.ts';
import type { Service, Workload } from '../core/types.ts';
import type { ConfigStore } from './config-store.ts';
import { parseIdentity } from '../core/identity.ts';
import { logger, debug } from '../core/log.ts';
import { originalDestination } from './original-dst.ts';
import type { SocketAddress } from './original-dst.ts';
import { unmapIpv4 } from './authorization.ts';
import type { AuthorizationInput, Decision } from './authorization.ts';
import { decide } from './admission.ts';
import type { Admission, AdmissionContext } from './admission.ts';
import type { ConnectionTracker } from './connection-tracker.ts';
import { listen, listeningFd, openSockets, stopListening } from './listen.ts';
import { relay } from './relay.ts';
import { PodDialer } from './pod-dialer.ts';
import { spiffeIdOf } from './peer-identity.ts';
import { httpServiceOf } from './l7/protocol.ts';
import { countBytes } from './l7/byte-count.ts';
import { DEFAULT_DETECT_TIMEOUT_MS, detectProtocol } from './l7/detect.ts';
import type { HttpInbound } from './l7/http-inbound.ts';
import type { FairShare } from './fair-share.ts';
import { sourceKey } from './fair-share.ts';
import {
  HBONE_HANDSHAKE_TIMEOUT_MS, HBONE_IDLE_TIMEOUT_MS, HBONE_MAX_CONCURRENT_STREAMS, HBONE_MAX_HEADER_LIST_SIZE, HBONE_MAX_HEADER_PAIRS, HBONE_MAX_INVALID_FRAMES,
  HBONE_MAX_REJECTED_STREAMS, HBONE_MAX_STREAMS_PER_PEER, HBONE_SESSION_MEMORY_MB, HBONE_SESSION_WINDOW, HBONE_STREAM_WINDOW, REASON_HEADER,
} from './hbone-settings.ts';

const log = logger('inbound');
const trace = debug('hbone');
const traceInbound = debug('inbound');

export interface InboundOptions {
  config: ConfigStore;
  certs: CertSource;
  tracker: ConnectionTracker;
  admission: Admission;
  host: string;
  port: number;
  /** A listening socket made in a pod's namespace, served instead of binding host:port. */
  fd?: number;
  /** Reaches pods on this node (from inside their namespace when captured there). */
  dialer?: PodDialer;
  /** Which pod the peer dialled; SO_ORIGINAL_DST unless a test injects it. */
  destinationOf?: (socket: net.Socket) => SocketAddress | null;
  /** Per-request handling of ports a Service declares HTTP; without it every tunnel is TCP. */
  http?: HttpInbound;
  /** From accept to the peer's first HTTP/2 SETTINGS; default HBONE_HANDSHAKE_TIMEOUT_MS (10 s). */
  handshakeTimeoutMs?: number;
  /** Open tunnel streams per peer (source identity and node address); default HBONE_MAX_STREAMS_PER_PEER. */
  maxStreamsPerPeer?: number;
  /** A session with no open stream is closed (GOAWAY) after this long; default HBONE_IDLE_TIMEOUT_MS (2 min). */
  idleTimeoutMs?: number;
  /**
   * The node's fair share: each TCP tunnel's connection to the pod is counted
   * under its (verified) source workload, so a remote pod flooding this node's
   * proxy is read less when the loop lags, as a local one is on the outbound side.
   */
  fairShare?: FairShare;
}

/** A connection between accept and the peer's first SETTINGS. */
interface Handshake {
  timer: NodeJS.Timeout;
  dialled: Workload;
  /** Known once TLS completed. */
  peerIdentity?: string;
  /** Destroys what the connection has become so far: the raw socket, the TLS socket, the session. */
  destroy: () => void;
}

interface SessionContext {
  /** The identity this side presented. */
  servedIdentity: string;
  peerIdentity: string;
  peerNamespace: string;
  peerIp: string;
}

export class InboundListener {
  readonly port: number;
  readonly #opts: InboundOptions;
  readonly #dialer: PodDialer;
  readonly #server: net.Server;
  readonly #destinationOf: (socket: net.Socket) => SocketAddress | null;
  readonly #tlsServers = new Map<string, { server: tls.Server; chainPem: string; bundle: string }>();
  readonly #sockets: Set<net.Socket>;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #handshakeTimeoutMs: number;
  readonly #maxStreamsPerPeer: number;
  readonly #idleTimeoutMs: number;
  /** By connectionKey: the TLS socket node creates from our raw socket is only seen again at 'secureConnection'. */
  readonly #handshakes = new Map<string, Handshake>();
  /** Open tunnel streams per peer key, and whether its refusal was logged at warn since it reached the limit. */
  readonly #peerStreams = new Map<string, { open: number; warned: boolean }>();
  /** Sessions carrying a tunnel on an HTTP port spliced as TCP, to move when a tap wants requests. */
  readonly #splicedHttp = new Set<Http2Session>();
  readonly #unwatchRequests: () => void;

  private constructor(opts: InboundOptions, server: net.Server, port: number) {
    this.#opts = opts;
    this.#dialer = opts.dialer ?? new PodDialer();
    this.#server = server;
    this.port = port;
    this.#destinationOf = opts.destinationOf ?? originalDestination;
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? HBONE_HANDSHAKE_TIMEOUT_MS;
    this.#maxStreamsPerPeer = opts.maxStreamsPerPeer ?? HBONE_MAX_STREAMS_PER_PEER;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? HBONE_IDLE_TIMEOUT_MS;
    this.#sockets = openSockets(server);
    server.on('connection', (socket) => this.#onConnection(socket));
    this.#unwatchRequests = opts.http?.onRequestsWanted(() => this.#retireSplicedHttp()) ?? (() => {});
  }

  static async bind(opts: InboundOptions): Promise<InboundListener> {
    const server = net.createServer({ noDelay: true });
    const port = await listen(server, 'inbound HBONE listener', opts);
    return new InboundListener(opts, server, port);
  }

  get fd(): number {
    return listeningFd(this.#server);
  }

  /** Stops accepting and sends GOAWAY on every session: open tunnels finish, peers open new sessions elsewhere. */
  stopAccepting(): void {
    for (const session of this.#sessions) session.close();
    stopListening(this.#server);
  }

  /** Destroys every session and pending handshake. */
  close(): void {
    this.#unwatchRequests();
    this.stopAccepting();
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Certificates rotated: serve the new ones on new sessions. */
  certsChanged(): void {
    for (const [identity, { server }] of this.#tlsServers) {
      // Drop servers of identities no longer held; the others refresh on next use.
      if (!this.#opts.certs.certFor(identity)) {
        server.close();
        this.#tlsServers.delete(identity);
      }
    }
  }

  #onConnection(raw: net.Socket): void {
    const peer = `${unmapIpv4(raw.remoteAddress ?? '?')}:${raw.remotePort}`;
    raw.on('error', (err) => trace('connection error', { peer, error: err.message }));
    let dialled: SocketAddress | null;
    try {
      dialled = this.#destinationOf(raw);
    } catch (err) {
      log.warn('HBONE connection refused: cannot read its original destination', { peer, error: (err as Error).message });
      raw.destroy();
      return;
    }
    if (!dialled) {
      log.warn('HBONE connection refused: it was dialled to the node itself, not redirected from a pod IP; peers must dial <pod IP>:15008', { peer });
      raw.destroy();
      return;
    }
    const { config } = this.#opts;
    const served = config.isLocalEnrolled(dialled.ip);
    if (!served) {
      log.warn('HBONE connection refused: no enrolled workload on this node has the dialled IP', { peer, dialled: dialled.ip, node: config.nodeName });
      raw.destroy();
      return;
    }
    const servedIdentity = config.identityOf(served);
    const server = this.#tlsServerFor(servedIdentity);
    if (!server) {
      log.warn('HBONE connection refused: no certificate yet for the dialled workload; check the agent /certs endpoint', { peer, identity: servedIdentity });
      raw.destroy();
      return;
    }
    this.#armHandshakeDeadline(raw, served);
    server.emit('connection', raw);
  }

  /**
   * One absolute deadline from accept to the peer's first HTTP/2 SETTINGS. The
   * tls.Server's handshakeTimeout does not do it: it is an idle timer (a peer
   * dribbling a ClientHello resets it), with a tlsClientError listener it does
   * not close the socket, and it ends with TLS, so nothing bounded the wait for
   * the HTTP/2 preface. Closures are counted (reason "handshake_timeout") and
   * logged at debug only: a flood of them must not flood the log.
   */
  #armHandshakeDeadline(raw: net.Socket, dialled: Workload): void {
    const key = connectionKey(raw);
    const handshake: Handshake = {
      dialled,
      destroy: () => raw.destroy(),
      timer: setTimeout(() => this.#handshakeExpired(key), this.#handshakeTimeoutMs),
    };
    this.#handshakes.set(key, handshake);
    raw.on('close', () => this.#handshakeDone(key));
  }

  #handshakeDone(key: string): void {
    const handshake = this.#handshakes.get(key);
    if (!handshake) return;
    clearTimeout(handshake.timer);
    this.#handshakes.delete(key);
  }

  #handshakeExpired(key: string): void {
    const handshake = this.#handshakes.get(key);
    if (!handshake) return;
    this.#handshakeDone(key);
    const stage = handshake.peerIdentity ? 'no HTTP/2 SETTINGS after TLS' : 'TLS not completed';
    this.#opts.admission.refuse({
      destination: handshake.dialled, sourcePrincipal: handshake.peerIdentity ?? null, reason: 'handshake_timeout',
      message: `${stage} within ${this.#handshakeTimeoutMs} ms`,
    }, { what: 'HBONE connection', log, quiet: true, fields: { peer: key.split('>')[0] } });
    handshake.destroy();
  }

  /**
   * One (never listening) tls.Server per served identity: it verifies client
   * certificates against the trust bundle and rejects failures, as node:tls does
   * for listening servers; we only choose which one gets the raw socket.
   */
  #tlsServerFor(identity: string): tls.Server | undefined {
    const cert = this.#opts.certs.certFor(identity);
    if (!cert) return undefined;
    const bundle = this.#opts.certs.trustBundle();
    const contextOptions: tls.SecureContextOptions = { key: cert.keyPem, cert: cert.chainPem, ca: bundle, minVersion: 'TLSv1.3' };
    const cached = this.#tlsServers.get(identity);
    if (cached) {
      if (cached.chainPem !== cert.chainPem || cached.bundle !== bundle) {
        cached.server.setSecureContext(contextOptions);
        Object.assign(cached, { chainPem: cert.chainPem, bundle });
      }
      return cached.server;
    }
    const server = tls.createServer({
      ...contextOptions,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
      // An idle timer of the same length: whichever of it and our deadline fires first closes the socket, counted once.
      handshakeTimeout: this.#handshakeTimeoutMs,
    });
    server.on('tlsClientError', (err, socket) => {
      const code = (err as NodeJS.ErrnoException).code;
      const key = connectionKey(socket);
      // Gone from the map: our deadline closed it, and this error is the consequence.
      const closedByDeadline = !this.#handshakes.has(key);
      if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.#handshakeExpired(key);
      // With this listener node leaves the socket open: close it.
      socket.destroy();
      // A peer that went away is no TLS failure to warn about.
      if (closedByDeadline || code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || code === 'ECONNRESET') return;
      log.warn('HBONE TLS handshake failed: check that the peer node trusts the same mesh root and presents a current workload certificate', {
        peer: `${unmapIpv4(socket.remoteAddress ?? '?')}:${socket.remotePort}`, identity, error: err.message,
      });
    });
    server.on('secureConnection', (secure: tls.TLSSocket) => this.#onSecure(secure, identity));
    this.#tlsServers.set(identity, { server, chainPem: cert.chainPem, bundle });
    return server;
  }

  #onSecure(secure: tls.TLSSocket, servedIdentity: string): void {
    const peer = `${unmapIpv4(secure.remoteAddress ?? '?')}:${secure.remotePort}`;
    const key = connectionKey(secure);
    secure.on('error', (err) => trace('TLS connection error', { peer, error: err.message }));
    const peerIdentity = spiffeIdOf(secure.getPeerCertificate());
    let peerNamespace: string;
    try {
      if (!peerIdentity) throw new Error('no single spiffe:// URI SAN');
      peerNamespace = parseIdentity(peerIdentity).namespace;
    } catch (err) {
      log.warn('HBONE peer refused: its certificate carries no workload SPIFFE ID', { peer, error: (err as Error).message });
      secure.destroy();
      return;
    }
    const handshake = this.#handshakes.get(key);
    if (handshake) handshake.peerIdentity = peerIdentity;
    this.#startSession(secure, key, { servedIdentity, peerIdentity, peerNamespace, peerIp: unmapIpv4(secure.remoteAddress ?? '') });
  }

  #startSession(secure: tls.TLSSocket, key: string, ctx: SessionContext): void {
    const session = http2.performServerHandshake(secure, {
      settings: { initialWindowSize: HBONE_STREAM_WINDOW, maxConcurrentStreams: HBONE_MAX_CONCURRENT_STREAMS, maxHeaderListSize: HBONE_MAX_HEADER_LIST_SIZE },
      maxHeaderListPairs: HBONE_MAX_HEADER_PAIRS,
      maxSessionInvalidFrames: HBONE_MAX_INVALID_FRAMES,
      maxSessionRejectedStreams: HBONE_MAX_REJECTED_STREAMS,
      maxSessionMemory: HBONE_SESSION_MEMORY_MB,
    });
    const handshake = this.#handshakes.get(key);
    if (handshake) {
      const before = handshake.destroy;
      handshake.destroy = () => {
        session.destroy();
        before();
      };
    }
    // The peer's SETTINGS end the handshake: the preface arrived.
    session.once('remoteSettings', () => this.#handshakeDone(key));
    this.#sessions.add(session);
    // Only possible once the session is set up.
    session.once('connect', () => session.setLocalWindowSize(HBONE_SESSION_WINDOW));
    session.on('error', (err) => trace('session error', { peer: ctx.peerIdentity, error: err.message }));
    session.on('close', () => this.#sessions.delete(session));
    this.#closeWhenIdle(session, ctx);
    session.on('stream', (stream, headers) => this.#onStream(ctx, stream, headers));
    trace('session open', { peer: ctx.peerIdentity, served: ctx.servedIdentity });
  }

  /**
   * Closes the session with a GOAWAY once it has had no open stream for the idle
   * timeout (from its start, or from its last stream's close): a stream count and
   * one timer per idle period, nothing per frame. A PING does not keep it: only
   * tunnels do.
   */
  #closeWhenIdle(session: ServerHttp2Session, ctx: SessionContext): void {
    let open = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      timer = setTimeout(() => {
        trace('closing idle session', { peer: ctx.peerIdentity, idleMs: this.#idleTimeoutMs });
        session.close();
      }, this.#idleTimeoutMs);
      timer.unref();
    };
    arm();
    session.on('stream', (stream) => {
      if (open++ === 0) clearTimeout(timer);
      stream.on('close', () => {
        if (--open === 0 && !session.closed && !session.destroyed) arm();
      });
    });
    session.on('close', () => clearTimeout(timer));
  }

  #onStream(ctx: SessionContext, stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', (err) => trace('stream error', { error: err.message }));
    const method = headers[':method'];
    const authority = headers[':authority'];
    if (method !== 'CONNECT') return refuse(stream, 400, `HBONE expects CONNECT, got ${method}`);
    const target = parseAuthority(authority);
    if (!target) return refuse(stream, 400, `:authority must be <pod IP>:<port>, got ${JSON.stringify(authority ?? '')}`);
    const { config, tracker } = this.#opts;
    const workload = config.isLocalEnrolled(target.ip);
    if (!workload) return refuse(stream, 404, `no enrolled workload with IP ${target.ip} on node ${config.nodeName}`);
    const identity = config.identityOf(workload);
    // The peer verified the identity we presented; it may reach only workloads with that identity.
    if (identity !== ctx.servedIdentity) {
      return refuse(stream, 400, `tunnel authenticated as ${ctx.servedIdentity} cannot reach ${target.ip} (${identity})`);
    }
    const what = { what: 'HBONE tunnel', log, fields: { peer: ctx.peerIp, target: authority } };
    const source = this.#verifiedSource(ctx, headers['forwarded']);
    if ('error' in source) {
      this.#opts.admission.refuse({ destination: workload, sourcePrincipal: ctx.peerIdentity, reason: 'forwarded_mismatch', message: source.error }, what);
      return refuse(stream, 400, source.error);
    }
    if (!this.#admitPeerStream(ctx, stream, workload, what)) return;
    const input: AuthorizationInput = {
      sourcePrincipal: ctx.peerIdentity,
      sourceNamespace: ctx.peerNamespace,
      sourceIp: source.ip,
      destination: workload,
      port: target.port,
    };
    const httpService = this.#opts.http ? httpServiceOf(config, target.ip, target.port) : undefined;
    // A tunnel allowed as a whole allows each of its requests (at L4 a DENY rule on HTTP fields denies,
    // an ALLOW grants only by a rule without them): it is read only when refused (per-request 403s, or
    // an ALLOW on methods or paths), or when this node needs its requests.
    const decision = httpService && !this.#opts.http!.needsRequests ? decide(config, input) : undefined;
    const parsed = httpService !== undefined && decision?.allowed !== true;
    traceInbound('HBONE stream', { source: ctx.peerIdentity, sourceIp: input.sourceIp, target: authority, http: parsed });
    if (httpService && parsed) {
      // Authorized per request: an ALLOW rule on methods or paths can only match there.
      stream.respond({ ':status': 200 });
      // A port declared HTTP that carries something else is still served, as TCP (fail-closed for L7 rules).
      detectProtocol(stream, DEFAULT_DETECT_TIMEOUT_MS).then(({ protocol, head }) => {
        if (stream.destroyed) return;
        if (protocol === 'opaque') return this.#serveTcp(ctx, stream, input, authority, head, httpService);
        const sourceWorkload = config.workloadByIp(input.sourceIp);
        const tracked = tracker.open({
          listener: 'inbound', reporter: 'destination', sourceIp: input.sourceIp, sourceWorkload, sourcePrincipal: ctx.peerIdentity,
          destinationIp: target.ip, destinationPort: target.port, destinationWorkload: workload, destinationPrincipal: identity,
          service: httpService, security: 'mutual_tls', bytes: countBytes(stream), destroy: () => stream.destroy(),
        });
        stream.on('close', () => tracked.finish());
        const conn = { authorization: input, sourceWorkload, destinationPrincipal: identity, service: httpService, security: 'mutual_tls' as const, addForwardedFor: false };
        if (protocol === 'http2') this.#opts.http!.serveHttp2(stream, conn, head);
        else this.#opts.http!.serveHttp1(stream, conn, head);
      });
      return;
    }
    if (httpService) this.#splicingHttp(stream.session!);
    this.#serveTcp(ctx, stream, input, authority, Buffer.alloc(0), httpService, decision);
  }

  /** `session` carries a tunnel on an HTTP port whose requests this node does not read. */
  #splicingHttp(session: Http2Session): void {
    if (this.#splicedHttp.has(session)) return;
    this.#splicedHttp.add(session);
    session.once('close', () => this.#splicedHttp.delete(session));
  }

  /**
   * GOAWAY to every session carrying a spliced HTTP tunnel: its peer finishes the
   * responses under way and sends its next requests in tunnels of a new session,
   * which this node reads (a tap now wants their requests).
   */
  #retireSplicedHttp(): void {
    for (const session of this.#splicedHttp) session.close();
    this.#splicedHttp.clear();
  }

  /**
   * The source address the peer claims, bound to the identity it proved: the
   * tunnel comes from the source node's address, so the source pod is known only
   * from `Forwarded: for=`, and it counts (for ipBlocks and for metrics) only
   * when it is a workload of the peer certificate's identity. Our own pool always
   * sends the source pod's IP with that pod's certificate; anything else — no
   * header, a malformed one, several addresses, an unknown IP, a workload of
   * another identity — is refused.
   */
  #verifiedSource(ctx: SessionContext, header: string | string[] | undefined): { ip: string } | { error: string } {
    const claimed = parseForwardedFor(header);
    if ('error' in claimed) return claimed;
    const { config } = this.#opts;
    const w = config.workloadByIp(claimed.ip);
    if (!w) return { error: `Forwarded for=${claimed.ip} is not a workload this node knows; the source must be a pod of ${ctx.peerIdentity}` };
    const identity = config.identityOf(w);
    if (identity !== ctx.peerIdentity) {
      return { error: `Forwarded for=${claimed.ip} is ${w.namespace}/${w.name} (${identity}), not a workload of the peer's identity ${ctx.peerIdentity}` };
    }
    return claimed;
  }

  /**
   * Counts the stream against its peer's open tunnels until it closes; refuses it
   * (503) when the peer is at its limit. The key is the peer's identity on its
   * node: an IP alone would let one noisy workload lock its node-mates out, an
   * identity alone would add up a deployment's pods on every node. The first
   * refusal of a run is logged at warn, the rest at debug.
   */
  #admitPeerStream(ctx: SessionContext, stream: ServerHttp2Stream, workload: Workload, what: AdmissionContext): boolean {
    const key = `${ctx.peerIdentity}@${ctx.peerIp}`;
    let peer = this.#peerStreams.get(key);
    if (!peer) this.#peerStreams.set(key, (peer = { open: 0, warned: false }));
    if (peer.open >= this.#maxStreamsPerPeer) {
      const message = `peer ${ctx.peerIdentity} at ${ctx.peerIp} already holds ${peer.open} open tunnels to this node (limit ${this.#maxStreamsPerPeer})`;
      this.#opts.admission.refuse({ destination: workload, sourcePrincipal: ctx.peerIdentity, reason: 'source_limit', message }, { ...what, quiet: peer.warned });
      peer.warned = true;
      refuse(stream, 503, message);
      return false;
    }
    peer.open++;
    const counted = peer;
    stream.on('close', () => {
      counted.open--;
      if (counted.open < this.#maxStreamsPerPeer) counted.warned = false;
      if (counted.open === 0 && this.#peerStreams.get(key) === counted) this.#peerStreams.delete(key);
    });
    return true;
  }

  /** Admits the tunnel as a whole (`admitted`: already allowed) and splices it to the pod; `head` was read from it already. */
  #serveTcp(
    ctx: SessionContext, stream: ServerHttp2Stream, input: AuthorizationInput, authority: string | undefined, head: Buffer, service?: Service, admitted?: Decision,
  ): void {
    const { config, admission, tracker } = this.#opts;
    const workload = input.destination;
    const target = { ip: workload.ip, port: input.port };
    const decision = admitted ?? admission.admit(input, { what: 'HBONE tunnel', log, fields: { peer: ctx.peerIp, target: authority } });
    if (!decision.allowed) {
      // Past protocol detection the 200 is out: the tunnel can only be reset.
      if (stream.headersSent) return void stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return refuse(stream, 403, decision.reason);
    }
    relay({
      client: stream,
      connect: () => this.#dialer.connect(target.ip, target.port, input.sourceIp),
      head,
      opened: (upstream) => {
        if (!stream.headersSent) stream.respond({ ':status': 200 });
        const sourceWorkload = config.workloadByIp(input.sourceIp);
        // The pod's answers: a tunnel whose answers are not read sends no next request (one window of a
        // closed-loop flood's tunnels moves at a time), and the tunnel's HTTP/2 stream has no handle to stop.
        this.#opts.fairShare?.register(sourceKey(sourceWorkload, input.sourceIp), upstream, 'answers');
        return tracker.open({
          listener: 'inbound', reporter: 'destination', sourceIp: input.sourceIp, sourceWorkload,
          sourcePrincipal: ctx.peerIdentity, destinationIp: target.ip, destinationPort: target.port, destinationWorkload: workload,
          destinationPrincipal: config.identityOf(workload), service, security: 'mutual_tls', authorization: input,
          // Upstream is the pod: what we write to it came from the source.
          bytes: () => ({ received: upstream.bytesWritten, sent: upstream.bytesRead }),
          destroy: () => {
            stream.destroy();
            upstream.destroy();
          },
        }).finish;
      },
      failed: (err) => {
        if (stream.headersSent) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        else refuse(stream, 503, `cannot connect to ${target.ip}:${target.port}: ${err.message}`);
      },
    });
  }
}

function refuse(stream: ServerHttp2Stream, status: number, reason: string): void {
  trace('stream refused', { status, reason });
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ':status': status, [REASON_HEADER]: reason.replace(/[^\x20-\x7e]/g, '?') }, { endStream: true });
}

/** "10.0.0.5:8080" or "[fd00::5]:8080"; null when malformed. */
export function parseAuthority(authority: string | undefined): SocketAddress | null {
  if (!authority) return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(authority);
  if (!m) return null;
  const ip = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (net.isIP(ip) === 0 || port < 1 || port > 65535) return null;
  return { ip, port };
}

/** "<remote>><local>" addresses and ports: names one TCP connection while it is open, whichever socket object wraps it. */
function connectionKey(socket: net.Socket): string {
  return `${unmapIpv4(socket.remoteAddress ?? '?')}:${socket.remotePort}>${socket.localAddress}:${socket.localPort}`;
}

const FORWARDED_PAIR = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)=([!#$%&'*+.^_`|~0-9A-Za-z-]+|"[^"\\]*")$/;
const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

/**
 * The one source address of `Forwarded` (RFC 7239), as a source node sends it:
 * one element (no comma: a list names several hops), exactly one `for=` pair
 * (others are ignored), whose value is an IPv4 address, bare or quoted, or an
 * IPv6 address quoted in brackets; no port, no obfuscated name. Anything else is
 * an error saying what was wrong.
 */
export function parseForwardedFor(header: string | string[] | undefined): { ip: string } | { error: string } {
  if (Array.isArray(header) && header.length > 1) return { error: 'several Forwarded headers: the source must be one address' };
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return { error: 'no Forwarded header: the source node must send Forwarded: for=<source pod IP>' };
  const shown = JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);
  if (value.includes(',')) return { error: `Forwarded ${shown} names several hops: the source must be one address` };
  const fors: string[] = [];
  for (const pair of value.split(';').map((p) => p.trim()).filter(Boolean)) {
    const m = FORWARDED_PAIR.exec(pair);
    if (!m) return { error: `Forwarded ${shown} is malformed` };
    if (m[1]!.toLowerCase() === 'for') fors.push(m[2]!);
  }
  if (fors.length !== 1) return { error: `Forwarded ${shown} must carry exactly one for=, has ${fors.length}` };
  const raw = fors[0]!;
  const quoted = raw.startsWith('"') ? raw.slice(1, -1) : undefined;
  let ip: string | undefined;
  if (quoted === undefined) ip = IPV4.test(raw) && net.isIPv4(raw) ? raw : undefined;
  else if (quoted.startsWith('[') && quoted.endsWith(']')) ip = net.isIPv6(quoted.slice(1, -1)) ? quoted.slice(1, -1) : undefined;
  else ip = IPV4.test(quoted) && net.isIPv4(quoted) ? quoted : undefined;
  if (!ip) return { error: `Forwarded ${shown}: for= must be an IPv4 address or a quoted "[IPv6]" address, with no port` };
  return { ip: unmapIpv4(ip) };
}
