// The HBONE client: HTTP/2 CONNECT tunnels over mutual TLS to <pod IP>:15008 on
// the destination node. Sessions are pooled per (source identity, destination
// identity, destination IP) and multiplexed; a new session is opened when the
// pooled ones are closing or at the peer's stream limit. Idle sessions are closed
// after a minute, and all sessions of an identity when its certificate rotates.

import tls from 'node:tls';
import http2 from 'node:http2';
import net from 'node:net';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { CertSource } from '../core/cert-source.ts';
import { PeerError } from '../core/errors.ts';
import { debug } from '../core/log.ts';
import { HBONE_MAX_CONCURRENT_STREAMS, HBONE_POOL_IDLE_TIMEOUT_MS, HBONE_PORT, HBONE_SESSION_MEMORY_MB, HBONE_SESSION_WINDOW, HBONE_STREAM_WINDOW, REASON_HEADER } from './hbone-settings.ts';
import { spiffeIdOf } from './peer-identity.ts';

const trace = debug('hbone');

/**
 * Whether `tunnel` (a stream of this pool, or any other connection) belongs to a
 * session the destination is draining: node closes a client session on a GOAWAY
 * without error, letting open streams finish. Keep-alive users of a tunnel send
 * it no new request then; the next one goes in a tunnel of a new session.
 */
export function tunnelDraining(tunnel: object): boolean {
  return (tunnel as Partial<ClientHttp2Stream>).session?.closed === true;
}

export interface HboneRequest {
  /** The source workload's SPIFFE ID: its certificate is presented. */
  sourceIdentity: string;
  /** The SPIFFE ID the peer must present. */
  destinationIdentity: string;
  destinationIp: string;
  /** For error messages: which node's daemon is dialled. */
  destinationNode: string;
  /** :authority, "<pod IP>:<port>". */
  target: string;
  /** The original source IP, sent as `Forwarded: for=`. */
  forwardedFor: string;
}

export interface HbonePoolOptions {
  certs: CertSource;
  /** Port dialled on the destination pod IP; 15008 except in tests. */
  port?: number;
  /** A session with no open tunnel is closed after this long; default HBONE_POOL_IDLE_TIMEOUT_MS (60 s). */
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
}

interface PooledSession {
  key: string;
  session: ClientHttp2Session;
  sourceIdentity: string;
  chainPem: string;
  bundle: string;
  ready: Promise<void>;
  /** Streams opened or being opened on it. */
  active: number;
  draining: boolean;
  idleTimer?: NodeJS.Timeout;
}

export class HbonePool {
  readonly #certs: CertSource;
  readonly #port: number;
  readonly #idleTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #pool = new Map<string, PooledSession[]>();

  constructor(opts: HbonePoolOptions) {
    this.#certs = opts.certs;
    this.#port = opts.port ?? HBONE_PORT;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? HBONE_POOL_IDLE_TIMEOUT_MS;
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  }

  /** Open sessions (for tests and the admin API). */
  get size(): number {
    let n = 0;
    for (const list of this.#pool.values()) n += list.length;
    return n;
  }

  /**
   * Opens a tunnel to `req.target`; rejects with PeerError saying what to check.
   * A stream the peer refused unprocessed (REFUSED_STREAM, or node's
   * ENHANCE_YOUR_CALM when our RST of a closing tunnel and this stream's HEADERS
   * reached a full session in one read, before node let go of the old stream) is
   * tried once more: nothing was sent on it.
   */
  async connect(req: HboneRequest): Promise<ClientHttp2Stream> {
    try {
      return await this.#connectOnce(req);
    } catch (err) {
      if (!(err instanceof StreamRefusedError)) throw err;
      trace('stream refused unprocessed, trying again', { target: req.target, error: err.message });
      return this.#connectOnce(req);
    }
  }

  async #connectOnce(req: HboneRequest): Promise<ClientHttp2Stream> {
    const pooled = this.#sessionFor(req);
    pooled.active++;
    if (pooled.idleTimer) clearTimeout(pooled.idleTimer);
    let stream: ClientHttp2Stream;
    try {
      await pooled.ready;
      stream = pooled.session.request(
        { ':method': 'CONNECT', ':authority': req.target, forwarded: `for=${formatForwarded(req.forwardedFor)}` },
        { endStream: false },
      );
    } catch (err) {
      this.#streamDone(pooled);
      throw err instanceof PeerError ? err : new PeerError(`HBONE to ${req.destinationIp} (node ${req.destinationNode}): ${(err as Error).message}`, { cause: err });
    }
    stream.on('close', () => this.#streamDone(pooled));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new (refusedOr(stream))(`HBONE tunnel to ${req.target} via ${req.destinationIp}:${this.#port} (node ${req.destinationNode}) failed: ${err.message}`, { cause: err }));
      const onClose = () => reject(new (refusedOr(stream))(`HBONE tunnel to ${req.target} (node ${req.destinationNode}) was closed before the peer answered (code ${stream.rstCode})`));
      stream.once('error', onError);
      stream.on('close', onClose);
      stream.once('response', (headers) => {
        // Answered: these listeners would otherwise live as long as the tunnel.
        stream.off('error', onError);
        stream.off('close', onClose);
        const status = Number(headers[':status']);
        if (status === 200) return resolve();
        stream.destroy();
        const reason = headers[REASON_HEADER] ?? 'no reason given';
        reject(new PeerError(`HBONE peer on node ${req.destinationNode} refused the tunnel to ${req.target} with ${status}: ${reason}`));
      });
    });
    return stream;
  }

  /** Certificates rotated: sessions opened with an old certificate or bundle close gracefully. */
  certsChanged(): void {
    const bundle = this.#certs.trustBundle();
    for (const list of this.#pool.values()) {
      for (const pooled of [...list]) {
        const current = this.#certs.certFor(pooled.sourceIdentity);
        if (current?.chainPem === pooled.chainPem && bundle === pooled.bundle) continue;
        trace('closing session after certificate rotation', { key: pooled.key });
        this.#evict(pooled);
        pooled.session.close();
      }
    }
  }

  /** Closes every session gracefully: open tunnels finish. */
  close(): void {
    for (const list of [...this.#pool.values()]) {
      for (const pooled of [...list]) {
        this.#evict(pooled);
        pooled.session.close();
      }
    }
  }

  destroy(): void {
    for (const list of [...this.#pool.values()]) {
      for (const pooled of [...list]) {
        this.#evict(pooled);
        pooled.session.destroy();
      }
    }
  }

  #sessionFor(req: HboneRequest): PooledSession {
    const key = `${req.sourceIdentity}|${req.destinationIdentity}|${req.destinationIp}`;
    const list = this.#pool.get(key) ?? [];
    const usable = list.find((p) => !p.draining && !p.session.closed && !p.session.destroyed && p.active < maxStreams(p.session));
    if (usable) return usable;
    const created = this.#open(key, req);
    list.push(created);
    this.#pool.set(key, list);
    return created;
  }

  #open(key: string, req: HboneRequest): PooledSession {
    const cert = this.#certs.certFor(req.sourceIdentity);
    if (!cert) throw new PeerError(`no certificate yet for source identity ${req.sourceIdentity}: check the agent's /certs endpoint and its connection to the control plane`);
    const bundle = this.#certs.trustBundle();
    const where = `${req.destinationIp}:${this.#port} (node ${req.destinationNode})`;
    let socketError: Error | undefined;
    const socket = tls.connect({
      host: req.destinationIp,
      port: this.#port,
      key: cert.keyPem,
      cert: cert.chainPem,
      ca: bundle,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      checkServerIdentity: (_host, peerCert) => {
        const presented = spiffeIdOf(peerCert);
        if (presented === req.destinationIdentity) return undefined;
        return new PeerError(`HBONE peer ${where} presented ${presented ?? 'no SPIFFE ID'}, expected ${req.destinationIdentity}: is the pod IP reused by another workload, or the peer's config stale?`);
      },
    });
    socket.setTimeout(this.#connectTimeoutMs, () => socket.destroy(Object.assign(new Error(`no TLS handshake within ${this.#connectTimeoutMs} ms`), { code: 'ETIMEDOUT' })));
    socket.once('secureConnect', () => socket.setTimeout(0));
    // Small request/response writes must not wait for the peer's delayed ACK (Nagle).
    socket.setNoDelay(true);
    socket.on('error', (err) => (socketError ??= err));
    const session = http2.connect(`https://${formatHost(req.destinationIp)}:${this.#port}`, {
      createConnection: () => socket,
      settings: { initialWindowSize: HBONE_STREAM_WINDOW },
      maxSessionMemory: HBONE_SESSION_MEMORY_MB,
    });
    // Only possible once the session is set up.
    session.once('connect', () => session.setLocalWindowSize(HBONE_SESSION_WINDOW));
    const pooled: PooledSession = { key, session, sourceIdentity: req.sourceIdentity, chainPem: cert.chainPem, bundle, ready: Promise.resolve(), active: 0, draining: false };
    pooled.ready = new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.on('close', () => reject(describeFailure(socketError, where, req.destinationNode)));
    });
    // Callers await `ready`; this keeps a failure nobody waits for from being unhandled.
    pooled.ready.catch(() => {});
    session.on('error', (err) => {
      socketError ??= err;
      trace('session error', { key, error: err.message });
    });
    session.once('goaway', () => (pooled.draining = true));
    session.on('close', () => this.#evict(pooled));
    trace('session opening', { key });
    return pooled;
  }

  #streamDone(pooled: PooledSession): void {
    pooled.active--;
    if (pooled.active > 0 || pooled.session.closed || pooled.session.destroyed) return;
    pooled.idleTimer = setTimeout(() => {
      trace('closing idle session', { key: pooled.key });
      this.#evict(pooled);
      pooled.session.close();
    }, this.#idleTimeoutMs);
    pooled.idleTimer.unref();
  }

  #evict(pooled: PooledSession): void {
    pooled.draining = true;
    if (pooled.idleTimer) clearTimeout(pooled.idleTimer);
    const list = this.#pool.get(pooled.key);
    if (!list) return;
    const rest = list.filter((p) => p !== pooled);
    if (rest.length) this.#pool.set(pooled.key, rest);
    else this.#pool.delete(pooled.key);
  }
}

/**
 * The peer's SETTINGS_MAX_CONCURRENT_STREAMS, at most 100 (as ztunnel's pool) and
 * 100 until its SETTINGS arrive: past it a new session is opened, since node
 * would queue the stream until one of the session's tunnels closes, which for a
 * TCP tunnel may be never. A peer advertising no limit still gets 100 per session.
 */
/** Resets that mean the peer did not process the stream (RFC 9113 8.7, and node's answer at its stream limit). */
const REFUSED_UNPROCESSED = new Set([http2.constants.NGHTTP2_REFUSED_STREAM, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM]);

/** A stream reset unprocessed before any answer: safe to open again. */
class StreamRefusedError extends PeerError {}

function refusedOr(stream: ClientHttp2Stream): typeof PeerError {
  return REFUSED_UNPROCESSED.has(stream.rstCode ?? -1) ? StreamRefusedError : PeerError;
}

function maxStreams(session: ClientHttp2Session): number {
  return Math.min(session.remoteSettings?.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS, HBONE_MAX_CONCURRENT_STREAMS);
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'EPIPE']);

function describeFailure(err: Error | undefined, where: string, node: string): PeerError {
  if (err instanceof PeerError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (!err) return new PeerError(`HBONE session to ${where} closed before it was established`);
  if (code && UNREACHABLE.has(code)) {
    return new PeerError(`cannot reach HBONE port at ${where}: ${err.message}; maybe a NetworkPolicy is blocking HBONE port 15008 on ${node}, or nodemesh is not running there`, { cause: err });
  }
  return new PeerError(`HBONE TLS handshake with ${where} failed: ${err.message}; check that both nodes trust the same mesh root and the source workload's certificate is current`, { cause: err });
}

function formatHost(ip: string): string {
  return net.isIP(ip) === 6 ? `[${ip}]` : ip;
}

function formatForwarded(ip: string): string {
  return net.isIP(ip) === 6 ? `"[${ip}]"` : ip;
}
