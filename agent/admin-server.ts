// The node admin API, on 127.0.0.1:15000 by default. JSON everywhere.
//
//   GET  /              this node's name and this list
//   GET  /config_dump   epoch, version, every resource, control-plane connection, rejected resources
//   GET  /workloads     local enrolled workloads with identity and certificate expiry
//   GET  /certs         workload certificates (identity, serial, validity, state) and trust bundle fingerprints
//   GET  /connections   open data-plane connections ([] without a data plane)
//   GET  /policies      authorization policies known to this node
//   GET  /routes        HTTP and gRPC routes known to this node, as the data plane applies them
//   GET  /explain       ?source=IP&destination=IP:PORT — what the data plane would do with that connection
//   GET  /tap           WebSocket: a JSON event per connection open and close, refusal (with its reason) and
//                       HTTP/gRPC request, as they happen; ?event=open,close,refusal,request &namespace=NS
//                       &workload=POD filter on the node (a bad filter is a 400 before the upgrade)
//   GET  /logging       level, enabled tracers, and every known tracer name with what it traces
//   POST /logging       ?level=debug|info|warn|error &tracers=hbone,outbound ("" turns tracers off, "*" turns all on;
//                       an unknown name is a 400 listing the known ones)
//
// State-changing endpoints accept POST only (405 otherwise) and only from a
// loopback peer (403 otherwise), even if the admin address is widened. An error
// answer is {"error": "<what to check>", "code": "NM_..."}, the code from
// core/errors.ts.

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { ExplainQuery, Explanation } from '../daemon/explain.ts';
import type { TapListener } from '../daemon/connection-tracker.ts';
import type { TapFilter } from '../daemon/tap.ts';
import { parseTapFilter } from '../daemon/tap.ts';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { TRACERS, enabledTracers, getLevel, logger, parseTracerList, setLevel, setTracers, unknownTracersMessage } from '../core/log.ts';
import type { Level } from '../core/log.ts';
import type { ConfigStore } from '../daemon/config-store.ts';
import type { CertManager } from './cert-manager.ts';
import type { ConnectionState, RejectedResource } from './control-client.ts';
import { ListeningHttpServer, listenHttp } from './http-listen.ts';

const log = logger('admin');
const LEVELS: ReadonlySet<string> = new Set(['debug', 'info', 'warn', 'error']);

export interface AdminSources {
  store: ConfigStore;
  certs: Pick<CertManager, 'status' | 'trustBundleFingerprints'>;
  control: { status(): ConnectionState; rejected(): RejectedResource[] };
  /** The data plane, when this node runs one. */
  connections?: () => object[] | Promise<object[]>;
  /** How each local enrolled pod (by IP) is captured: in its namespace or from the node's. */
  captured?: () => ReadonlyMap<string, string>;
  explain?: (query: ExplainQuery) => Explanation;
  tap?: (listener: TapListener, filter?: TapFilter) => () => void;
}

type Handler = (req: IncomingMessage, url: URL) => unknown;
type Method = 'GET' | 'POST';
/** The handler of each method a path accepts. */
type Endpoint = Partial<Record<Method, Handler>>;

/** An answer other than 200: its status, and a body of the message and code. */
class HttpError extends NodemeshError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string) {
    super(code, message);
    this.status = status;
  }
}

export class AdminServer extends ListeningHttpServer {
  readonly #closeTaps: () => void;

  private constructor(server: Server, closeTaps: () => void) {
    super(server);
    this.#closeTaps = closeTaps;
  }

  static async listen(addr: string, sources: AdminSources): Promise<AdminServer> {
    const endpoints = adminEndpoints(sources);
    const server = await listenHttp('admin server', addr, (req, res) => void serve(endpoints, req, res));
    return new AdminServer(server, serveTap(server, sources));
  }

  override close(): Promise<void> {
    // Upgraded sockets are no longer the HTTP server's: close them ourselves.
    this.#closeTaps();
    return super.close();
  }
}

function adminEndpoints(s: AdminSources): Map<string, Endpoint> {
  const endpoints = new Map<string, Endpoint>();
  const listing = () => listEndpoints(endpoints);
  endpoints.set('/', { GET: () => ({ node: s.store.nodeName, endpoints: listing() }) });
  endpoints.set('/config_dump', {
    GET: () => {
      const snap = s.store.snapshot();
      return {
        node: s.store.nodeName,
        epoch: snap.epoch,
        version: snap.version,
        synced: s.store.synced,
        controlPlane: s.control.status(),
        rejected: s.control.rejected(),
        resources: snap.resources,
      };
    },
  });
  endpoints.set('/workloads', {
    GET: () => {
      const certs = new Map(s.certs.status().map((c) => [c.identity, c]));
      const captured = s.captured?.() ?? new Map<string, string>();
      return s.store.localWorkloads().map((w) => {
        const identity = s.store.identityOf(w);
        const cert = certs.get(identity);
        return {
          uid: w.uid, namespace: w.namespace, name: w.name, workloadName: w.workloadName, serviceAccount: w.serviceAccount,
          ip: w.ip, mtlsMode: w.mtlsMode, identity, capture: captured.get(w.ip) ?? null,
          certificate: cert ? { state: cert.state, notAfter: cert.notAfter, serial: cert.serial } : null,
        };
      });
    },
  });
  endpoints.set('/certs', {
    GET: () => ({ trustBundle: { fingerprints: s.certs.trustBundleFingerprints() }, certificates: s.certs.status() }),
  });
  endpoints.set('/connections', { GET: () => s.connections?.() ?? [] });
  endpoints.set('/policies', { GET: () => s.store.policies() });
  endpoints.set('/routes', { GET: () => s.store.routes() });
  endpoints.set('/explain', { GET: (_req, url) => explainQuery(s, url) });
  // Served on upgrade (serveTap); listed here so / and 404s name it.
  endpoints.set('/tap', { GET: () => { throw new HttpError(426, ErrorCode.ADMIN_WEBSOCKET, '/tap is a WebSocket: connect with a WebSocket client (Upgrade: websocket)'); } });
  endpoints.set('/logging', { GET: () => loggingState(), POST: (_req, url) => changeLogging(url) });
  return endpoints;
}

function listEndpoints(endpoints: Map<string, Endpoint>): string[] {
  return [...endpoints.entries()].flatMap(([path, e]) => Object.keys(e).map((method) => `${method} ${path}`));
}

/** ?method=GET&path=/x&header=name:value (repeatable): the request whose route /explain names; none given: GET /. */
function explainRequest(params: URLSearchParams): ExplainQuery['http'] {
  const method = params.get('method');
  const path = params.get('path');
  const headerParams = params.getAll('header');
  if (method === null && path === null && !headerParams.length) return undefined;
  const bad = (what: string) => new HttpError(400, ErrorCode.BAD_EXPLAIN_QUERY, `explain: ${what} (?method=GET&path=/x&header=name:value)`);
  if (method !== null && !/^[A-Z]{1,16}$/.test(method)) throw bad(`method: ${JSON.stringify(method.slice(0, 32))} is not an HTTP method`);
  if (path !== null && (!path.startsWith('/') || path.length > 4096)) throw bad(`path: must start with "/" and be at most 4096 characters`);
  if (headerParams.length > 32) throw bad(`at most 32 headers, got ${headerParams.length}`);
  const headers: Record<string, string> = {};
  for (const h of headerParams) {
    const colon = h.indexOf(':');
    const name = colon > 0 ? h.slice(0, colon).trim().toLowerCase() : '';
    if (!/^[a-z0-9!#$%&'*+\-.^_`|~]{1,256}$/.test(name) || h.length > 4096) throw bad(`header: ${JSON.stringify(h.slice(0, 64))} is not name:value`);
    headers[name] = h.slice(colon + 1).trim();
  }
  return { method: method ?? 'GET', path: path ?? '/', headers };
}

function explainQuery(s: AdminSources, url: URL): Explanation {
  if (!s.explain) throw new HttpError(404, ErrorCode.NO_DATAPLANE, 'explain: this node runs no data plane (--no-dataplane)');
  const source = url.searchParams.get('source') ?? '';
  const destination = url.searchParams.get('destination') ?? '';
  const m = /^(.+):(\d{1,5})$/.exec(destination);
  if (isIP(source) !== 4) throw new HttpError(400, ErrorCode.BAD_EXPLAIN_QUERY, `explain: source: ${JSON.stringify(source)} is not an IPv4 address (?source=IP&destination=IP:PORT)`);
  if (!m || isIP(m[1]!) !== 4 || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new HttpError(400, ErrorCode.BAD_EXPLAIN_QUERY, `explain: destination: ${JSON.stringify(destination)} is not IPv4:PORT (?source=IP&destination=IP:PORT)`);
  }
  const http = explainRequest(url.searchParams);
  try {
    return s.explain({ sourceIp: source, destinationIp: m[1]!, port: Number(m[2]), ...(http ? { http } : {}) });
  } catch (err) {
    if ((err as { code?: string }).code === ErrorCode.BAD_EXPLAIN_QUERY) throw new HttpError(400, ErrorCode.BAD_EXPLAIN_QUERY, `explain: ${(err as Error).message}`);
    throw err;
  }
}

/**
 * `/tap`: each WebSocket client gets the data plane's connection events as JSON
 * text frames. Returns what closes every tap client.
 */
function serveTap(server: Server, s: AdminSources): () => void {
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    if (path !== '/tap' || !s.tap) {
      socket.end(`HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n\r\n${path === '/tap' ? 'tap: this node runs no data plane' : `no WebSocket endpoint ${path}; try /tap`}\n`);
      return;
    }
    let filter: TapFilter;
    try {
      filter = parseTapFilter(new URL(req.url ?? '/', 'http://admin').searchParams);
    } catch (err) {
      const body = JSON.stringify({ error: (err as Error).message, code: (err as NodemeshError).code ?? ErrorCode.INTERNAL }) + '\n';
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const unsubscribe = s.tap!((event) => {
        // A client that cannot keep up loses events rather than growing our memory.
        if (ws.bufferedAmount < 1 << 20) ws.send(JSON.stringify(event));
      }, filter);
      ws.on('close', unsubscribe);
      ws.on('error', unsubscribe);
    });
  });
  return () => {
    for (const client of wss.clients) client.terminate();
    wss.close();
  };
}

function loggingState(): object {
  return { level: getLevel(), tracers: enabledTracers(), known: Object.entries(TRACERS).map(([name, traces]) => ({ name, traces })) };
}

/** Checks both parameters before changing either: a 400 changes nothing. */
function changeLogging(url: URL): object {
  const level = url.searchParams.get('level');
  const tracerList = url.searchParams.get('tracers');
  if (level !== null && !LEVELS.has(level)) {
    throw new HttpError(400, ErrorCode.BAD_LOG_LEVEL, `logging: level: ${JSON.stringify(level)} is not one of debug, info, warn, error`);
  }
  const tracers = tracerList === null ? null : parseTracerList(tracerList);
  if (tracers?.unknown.length) throw new HttpError(400, ErrorCode.UNKNOWN_TRACER, `logging: tracers: ${unknownTracersMessage(tracers.unknown)}`);
  if (level !== null) setLevel(level as Level);
  if (tracers) setTracers(tracers.tracers);
  log.info('logging changed', { level: getLevel(), tracers: enabledTracers() });
  return { level: getLevel(), tracers: enabledTracers() };
}

async function serve(endpoints: Map<string, Endpoint>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const endpoint = endpoints.get(url.pathname);
  try {
    if (!endpoint) {
      throw new HttpError(404, ErrorCode.ADMIN_NO_ENDPOINT, `no endpoint ${url.pathname}; endpoints: ${listEndpoints(endpoints).join(', ')}`);
    }
    const handler = endpoint[req.method as Method];
    if (!handler) {
      const allowed = Object.keys(endpoint);
      res.setHeader('allow', allowed.join(', '));
      throw new HttpError(405, ErrorCode.ADMIN_METHOD, `${url.pathname} accepts ${allowed.join(' or ')} only`);
    }
    if (req.method === 'POST' && !isLoopback(req.socket.remoteAddress)) {
      throw new HttpError(403, ErrorCode.ADMIN_NOT_LOOPBACK, `${url.pathname} changes state and is accepted only from this node (loopback), not from ${req.socket.remoteAddress}`);
    }
    // Some answers come from every data-plane worker (daemon/workers.ts).
    sendJson(res, 200, await handler(req, url));
  } catch (err) {
    if (err instanceof HttpError) {
      sendJson(res, err.status, { error: err.message, code: err.code });
    } else {
      log.error('admin endpoint failed', { path: url.pathname, error: String((err as Error)?.stack ?? err) });
      const code = err instanceof NodemeshError ? err.code : ErrorCode.INTERNAL;
      sendJson(res, 500, { error: `${url.pathname}: ${(err as Error).message}`, code });
    }
  }
}

/** Arrays longer than this (the whole body, or a top-level field of it) are written entry by entry. */
const STREAMED_ENTRIES = 1000;

/**
 * Writes a JSON answer. A large one (a 10,000-pod /config_dump) never exists as
 * one string: its long arrays go out an entry at a time, waiting for the socket
 * to drain, so the node's memory does not grow with the size of the answer.
 */
function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  void (async () => {
    for (const chunk of jsonChunks(body, true)) {
      if (res.destroyed) return;
      if (!res.write(chunk)) await new Promise((resolve) => {
        res.once('drain', resolve);
        res.on('close', resolve);
      });
    }
    res.end('\n');
  })();
}

function* jsonChunks(value: unknown, top: boolean): Generator<string> {
  if (Array.isArray(value) && value.length > STREAMED_ENTRIES) {
    yield '[';
    for (let i = 0; i < value.length; i++) yield `${i ? ',' : ''}\n  ${JSON.stringify(value[i])}`;
    yield '\n]';
    return;
  }
  if (top && value !== null && typeof value === 'object' && !Array.isArray(value)
    && Object.values(value).some((v) => Array.isArray(v) && v.length > STREAMED_ENTRIES)) {
    const entries = Object.entries(value);
    yield '{';
    for (let i = 0; i < entries.length; i++) {
      const [key, v] = entries[i]!;
      yield `${i ? ',' : ''}\n${JSON.stringify(key)}: `;
      yield* jsonChunks(v, false);
    }
    yield '\n}';
    return;
  }
  yield JSON.stringify(value, null, 2);
}

/** 127.0.0.0/8, ::1, and their IPv4-mapped IPv6 form. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return address === '::1';
}
