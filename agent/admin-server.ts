// The node admin API, on 127.0.0.1:15000 by default. JSON everywhere.
//
//   GET  /              this list
//   GET  /config_dump   epoch, version, every resource, control-plane connection, rejected resources
//   GET  /workloads     local enrolled workloads with identity and certificate expiry
//   GET  /certs         workload certificates (identity, serial, validity, state) and trust bundle fingerprints
//   GET  /connections   open data-plane connections ([] without a data plane)
//   GET  /policies      authorization policies known to this node
//   GET  /explain       ?source=IP&destination=IP:PORT — what the data plane would do with that connection
//   GET  /tap           WebSocket: a JSON event per connection open and close, as they happen
//   POST /logging       ?level=debug|info|warn|error &tracers=hbone,outbound ("" turns tracers off)
//
// State-changing endpoints accept POST only (405 otherwise) and only from a
// loopback peer (403 otherwise), even if the admin address is widened.

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { ExplainQuery, Explanation } from '../daemon/explain.ts';
import type { TapListener } from '../daemon/connection-tracker.ts';
import { enabledTracers, getLevel, logger, setLevel, setTracers } from '../core/log.ts';
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
  connections?: () => object[];
  explain?: (query: ExplainQuery) => Explanation;
  tap?: (listener: TapListener) => () => void;
}

type Handler = (req: IncomingMessage, url: URL) => unknown;
interface Endpoint {
  method: 'GET' | 'POST';
  handler: Handler;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
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
    const server = await listenHttp('admin server', addr, (req, res) => serve(endpoints, req, res));
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
  const listing = () => [...endpoints.entries()].map(([path, e]) => `${e.method} ${path}`);
  endpoints.set('/', { method: 'GET', handler: () => ({ endpoints: listing() }) });
  endpoints.set('/config_dump', {
    method: 'GET',
    handler: () => {
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
    method: 'GET',
    handler: () => {
      const certs = new Map(s.certs.status().map((c) => [c.identity, c]));
      return s.store.localWorkloads().map((w) => {
        const identity = s.store.identityOf(w);
        const cert = certs.get(identity);
        return {
          uid: w.uid, namespace: w.namespace, name: w.name, workloadName: w.workloadName, serviceAccount: w.serviceAccount,
          ip: w.ip, mtlsMode: w.mtlsMode, identity,
          certificate: cert ? { state: cert.state, notAfter: cert.notAfter, serial: cert.serial } : null,
        };
      });
    },
  });
  endpoints.set('/certs', {
    method: 'GET',
    handler: () => ({ trustBundle: { fingerprints: s.certs.trustBundleFingerprints() }, certificates: s.certs.status() }),
  });
  endpoints.set('/connections', { method: 'GET', handler: () => s.connections?.() ?? [] });
  endpoints.set('/policies', { method: 'GET', handler: () => s.store.policies() });
  endpoints.set('/explain', { method: 'GET', handler: (_req, url) => explainQuery(s, url) });
  // Served on upgrade (serveTap); listed here so / and 404s name it.
  endpoints.set('/tap', { method: 'GET', handler: () => { throw new HttpError(426, '/tap is a WebSocket: connect with a WebSocket client (Upgrade: websocket)'); } });
  endpoints.set('/logging', { method: 'POST', handler: (_req, url) => changeLogging(url) });
  return endpoints;
}

function explainQuery(s: AdminSources, url: URL): Explanation {
  if (!s.explain) throw new HttpError(404, 'explain: this node runs no data plane (--no-dataplane)');
  const source = url.searchParams.get('source') ?? '';
  const destination = url.searchParams.get('destination') ?? '';
  const m = /^(.+):(\d{1,5})$/.exec(destination);
  if (isIP(source) !== 4) throw new HttpError(400, `explain: source: ${JSON.stringify(source)} is not an IPv4 address (?source=IP&destination=IP:PORT)`);
  if (!m || isIP(m[1]!) !== 4 || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new HttpError(400, `explain: destination: ${JSON.stringify(destination)} is not IPv4:PORT (?source=IP&destination=IP:PORT)`);
  }
  try {
    return s.explain({ sourceIp: source, destinationIp: m[1]!, port: Number(m[2]) });
  } catch (err) {
    if ((err as { code?: string }).code === 'NM_BAD_EXPLAIN_QUERY') throw new HttpError(400, `explain: ${(err as Error).message}`);
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
    wss.handleUpgrade(req, socket, head, (ws) => {
      const unsubscribe = s.tap!((event) => {
        // A client that cannot keep up loses events rather than growing our memory.
        if (ws.bufferedAmount < 1 << 20) ws.send(JSON.stringify(event));
      });
      ws.on('close', unsubscribe);
      ws.on('error', unsubscribe);
    });
  });
  return () => {
    for (const client of wss.clients) client.terminate();
    wss.close();
  };
}

function changeLogging(url: URL): object {
  const level = url.searchParams.get('level');
  const tracers = url.searchParams.get('tracers');
  if (level !== null && !LEVELS.has(level)) {
    throw new HttpError(400, `logging: level: ${JSON.stringify(level)} is not one of debug, info, warn, error`);
  }
  if (level !== null) setLevel(level as Level);
  if (tracers !== null) setTracers(tracers.split(',').map((t) => t.trim()).filter(Boolean));
  log.info('logging changed', { level: getLevel(), tracers: enabledTracers() });
  return { level: getLevel(), tracers: enabledTracers() };
}

function serve(endpoints: Map<string, Endpoint>, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://admin');
  const endpoint = endpoints.get(url.pathname);
  try {
    if (!endpoint) {
      throw new HttpError(404, `no endpoint ${url.pathname}; endpoints: ${[...endpoints.entries()].map(([p, e]) => `${e.method} ${p}`).join(', ')}`);
    }
    if (req.method !== endpoint.method) {
      res.setHeader('allow', endpoint.method);
      throw new HttpError(405, `${url.pathname} accepts ${endpoint.method} only`);
    }
    if (endpoint.method === 'POST' && !isLoopback(req.socket.remoteAddress)) {
      throw new HttpError(403, `${url.pathname} changes state and is accepted only from this node (loopback), not from ${req.socket.remoteAddress}`);
    }
    sendJson(res, 200, endpoint.handler(req, url));
  } catch (err) {
    if (err instanceof HttpError) {
      sendJson(res, err.status, { error: err.message });
    } else {
      log.error('admin endpoint failed', { path: url.pathname, error: String((err as Error)?.stack ?? err) });
      sendJson(res, 500, { error: `${url.pathname}: ${(err as Error).message}` });
    }
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
}

/** 127.0.0.0/8, ::1, and their IPv4-mapped IPv6 form. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return address === '::1';
}
