// The HBONE listener (15008): mutual-TLS HTTP/2 CONNECT tunnels from other nodes.
// The certificate to serve is chosen by the pod IP the peer dialled (its original
// destination before our REDIRECT), so no SNI is needed. Each CONNECT stream is
// authorized against the destination's policies and spliced to the local pod.

import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { CertSource } from '../core/cert-source.ts';
import type { ConfigStore } from './config-store.ts';
import { parseIdentity } from '../core/identity.ts';
import { logger, debug } from '../core/log.ts';
import { originalDestination } from './original-dst.ts';
import type { SocketAddress } from './original-dst.ts';
import { unmapIpv4 } from './authorization.ts';
import type { AuthorizationInput } from './authorization.ts';
import type { Admission } from './admission.ts';
import type { ConnectionTracker } from './connection-tracker.ts';
import { listen, openSockets, stopListening } from './listen.ts';
import { relay } from './relay.ts';
import { connectTcp } from './tcp-connect.ts';
import { spiffeIdOf } from './peer-identity.ts';
import { httpServiceOf } from './l7/protocol.ts';
import { countBytes } from './l7/byte-count.ts';
import { DEFAULT_DETECT_TIMEOUT_MS, detectProtocol } from './l7/detect.ts';
import type { HttpInbound } from './l7/http-inbound.ts';
import { HBONE_SESSION_MEMORY_MB, HBONE_SESSION_WINDOW, HBONE_STREAM_WINDOW, REASON_HEADER } from './hbone-settings.ts';

const log = logger('inbound');
const trace = debug('hbone');
const traceInbound = debug('inbound');
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface InboundOptions {
  config: ConfigStore;
  certs: CertSource;
  tracker: ConnectionTracker;
  admission: Admission;
  host: string;
  port: number;
  /** Which pod the peer dialled; SO_ORIGINAL_DST unless a test injects it. */
  destinationOf?: (socket: net.Socket) => SocketAddress | null;
  /** Per-request handling of ports a Service declares HTTP; without it every tunnel is TCP. */
  http?: HttpInbound;
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
  readonly #server: net.Server;
  readonly #destinationOf: (socket: net.Socket) => SocketAddress | null;
  readonly #tlsServers = new Map<string, { server: tls.Server; chainPem: string; bundle: string }>();
  readonly #sockets: Set<net.Socket>;
  readonly #sessions = new Set<ServerHttp2Session>();

  private constructor(opts: InboundOptions, server: net.Server, port: number) {
    this.#opts = opts;
    this.#server = server;
    this.port = port;
    this.#destinationOf = opts.destinationOf ?? originalDestination;
    this.#sockets = openSockets(server);
    server.on('connection', (socket) => this.#onConnection(socket));
  }

  static async bind(opts: InboundOptions): Promise<InboundListener> {
    const server = net.createServer({ noDelay: true });
    const port = await listen(server, 'inbound HBONE listener', opts.host, opts.port);
    return new InboundListener(opts, server, port);
  }

  /** Stops accepting and sends GOAWAY on every session: open tunnels finish, peers open new sessions elsewhere. */
  stopAccepting(): void {
    for (const session of this.#sessions) session.close();
    stopListening(this.#server);
  }

  /** Destroys every session and pending handshake. */
  close(): void {
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
    server.emit('connection', raw);
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
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    server.on('tlsClientError', (err, socket) => {
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
    this.#startSession(secure, { servedIdentity, peerIdentity, peerNamespace, peerIp: unmapIpv4(secure.remoteAddress ?? '') });
  }

  #startSession(secure: tls.TLSSocket, ctx: SessionContext): void {
    const session = http2.performServerHandshake(secure, {
      settings: { initialWindowSize: HBONE_STREAM_WINDOW },
      maxSessionMemory: HBONE_SESSION_MEMORY_MB,
    });
    this.#sessions.add(session);
    // Only possible once the session is set up.
    session.once('connect', () => session.setLocalWindowSize(HBONE_SESSION_WINDOW));
    session.on('error', (err) => trace('session error', { peer: ctx.peerIdentity, error: err.message }));
    session.on('close', () => this.#sessions.delete(session));
    session.on('stream', (stream, headers) => this.#onStream(ctx, stream, headers));
    trace('session open', { peer: ctx.peerIdentity, served: ctx.servedIdentity });
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
    const input: AuthorizationInput = {
      sourcePrincipal: ctx.peerIdentity,
      sourceNamespace: ctx.peerNamespace,
      sourceIp: forwardedFor(headers['forwarded']) ?? ctx.peerIp,
      destination: workload,
      port: target.port,
    };
    const httpService = this.#opts.http ? httpServiceOf(config, target.ip, target.port) : undefined;
    traceInbound('HBONE stream', { source: ctx.peerIdentity, sourceIp: input.sourceIp, target: authority, http: httpService !== undefined });
    if (httpService) {
      // Authorized per request: an ALLOW rule on methods or paths can only match there.
      stream.respond({ ':status': 200 });
      // A port declared HTTP that carries something else is still served, as TCP (fail-closed for L7 rules).
      detectProtocol(stream, DEFAULT_DETECT_TIMEOUT_MS).then(({ protocol, head }) => {
        if (stream.destroyed) return;
        if (protocol === 'opaque') return this.#serveTcp(ctx, stream, input, authority, head);
        const sourceWorkload = config.workloadByIp(input.sourceIp);
        const tracked = tracker.open({
          listener: 'inbound', reporter: 'destination', sourceIp: input.sourceIp, sourceWorkload, sourcePrincipal: ctx.peerIdentity,
          destinationIp: target.ip, destinationPort: target.port, destinationWorkload: workload, destinationPrincipal: identity,
          service: httpService, security: 'mutual_tls', bytes: countBytes(stream), destroy: () => stream.destroy(),
        });
        stream.once('close', () => tracked.finish());
        const conn = { authorization: input, sourceWorkload, destinationPrincipal: identity, service: httpService, security: 'mutual_tls' as const, addForwardedFor: false };
        if (protocol === 'http2') this.#opts.http!.serveHttp2(stream, conn, head);
        else this.#opts.http!.serveHttp1(stream, conn, head);
      });
      return;
    }
    this.#serveTcp(ctx, stream, input, authority, Buffer.alloc(0));
  }

  /** Admits the tunnel as a whole and splices it to the pod; `head` was read from it already. */
  #serveTcp(ctx: SessionContext, stream: ServerHttp2Stream, input: AuthorizationInput, authority: string | undefined, head: Buffer): void {
    const { config, admission, tracker } = this.#opts;
    const workload = input.destination;
    const target = { ip: workload.ip, port: input.port };
    const decision = admission.admit(input, { what: 'HBONE tunnel', log, fields: { target: authority } });
    if (!decision.allowed) {
      // Past protocol detection the 200 is out: the tunnel can only be reset.
      if (stream.headersSent) return void stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return refuse(stream, 403, decision.reason);
    }
    relay({
      client: stream,
      connect: () => connectTcp(target.ip, target.port),
      head,
      opened: (upstream) => {
        if (!stream.headersSent) stream.respond({ ':status': 200 });
        return tracker.open({
          listener: 'inbound', reporter: 'destination', sourceIp: input.sourceIp, sourceWorkload: config.workloadByIp(input.sourceIp),
          sourcePrincipal: ctx.peerIdentity, destinationIp: target.ip, destinationPort: target.port, destinationWorkload: workload,
          destinationPrincipal: config.identityOf(workload), security: 'mutual_tls', authorization: input,
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

/** The original source from `Forwarded: for=<ip>` (RFC 7239), or null. */
export function forwardedFor(header: string | string[] | undefined): string | null {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return null;
  const m = /(?:^|[;,\s])for=(?:"\[?([^"\]]+)\]?"|([^;,\s"]+))/i.exec(value);
  const ip = m ? (m[1] ?? m[2]!) : '';
  return net.isIP(ip) ? unmapIpv4(ip) : null;
}
