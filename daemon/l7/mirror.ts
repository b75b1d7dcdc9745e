// RequestMirror: a copy of a routed request to each mirror backend, its answer
// read and thrown away. The copy must never delay or fail the primary request, so
// it is fire-and-forget on its own connection (an HBONE stream or a socket, like
// any attempt, authorized like any attempt), it starts only once the primary is
// under way, its failures are traced and nothing else, and it is bounded: a body
// is copied up to 64 KiB (an HTTP/1 body that streams is not mirrored at all; an
// HTTP/2 copy that outgrows the bound is reset), and a copy gets 10 s.

import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import { debug } from '../../core/log.ts';
import type { Endpoint, HttpClientConnection, RequestPlan, RequestRouter } from './request-router.ts';
import { appendToList } from './filters.ts';
import { HOP_BY_HOP } from './http1-forward.ts';
import type { RoutableRequest } from './filters.ts';

export const MAX_MIRROR_BODY = 64 * 1024;
const MIRROR_TIMEOUT_MS = 10_000;
const { NGHTTP2_CANCEL } = http2.constants;

const trace = debug('http');

function endpoints(router: RequestRouter, conn: HttpClientConnection, plan: RequestPlan, req: RoutableRequest): Endpoint[] {
  return plan.mirrors.flatMap((m) => {
    const endpoint = router.mirrorEndpoint(req, conn, m);
    if (!endpoint) trace('mirror skipped', { mirror: `${m.service.namespace}/${m.service.name}:${m.port}`, reason: 'no ready, authorized endpoint' });
    return endpoint ? [endpoint] : [];
  });
}

/** HTTP/1: copies of a request whose whole body is `body` (undefined: it streams, and is not mirrored). */
export function mirrorHttp1(router: RequestRouter, conn: HttpClientConnection, plan: RequestPlan, req: http.IncomingMessage, body: Buffer | undefined): void {
  if (!plan.mirrors.length) return;
  if (body === undefined || body.length > MAX_MIRROR_BODY) return void trace('mirror skipped', { reason: 'the body streams' });
  const headers: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
  headers['content-length'] = String(body.length);
  headers['x-forwarded-for'] = appendToList(req.headers['x-forwarded-for'], conn.sourceIp);
  for (const endpoint of endpoints(router, conn, plan, req)) {
    void endpoint.connect().then((transport) => {
      // No agent: with one (even `agent: false`) node:http dials its own socket and ignores createConnection.
      const copy = http.request({ method: req.method, path: req.url, headers, createConnection: () => transport as net.Socket, timeout: MIRROR_TIMEOUT_MS });
      copy.on('response', (res) => {
        res.resume();
        res.once('end', () => transport.destroy());
      });
      copy.on('timeout', () => copy.destroy());
      copy.on('error', (err) => trace('mirror failed', { mirror: `${endpoint.ip}:${endpoint.port}`, error: err.message }));
      copy.on('close', () => transport.destroy());
      copy.end(body);
    }, (err: Error) => trace('mirror failed', { mirror: `${endpoint.ip}:${endpoint.port}`, error: err.message }));
  }
}

/** HTTP/2: copies of a stream, its data copied as the client sends it (up to 64 KiB), over the pooled session of each mirror endpoint. */
export function mirrorHttp2(
  router: RequestRouter, conn: HttpClientConnection, plan: RequestPlan, req: RoutableRequest, headers: OutgoingHttpHeaders,
  client: ServerHttp2Stream, session: (endpoint: Endpoint) => Promise<ClientHttp2Session>,
): void {
  if (!plan.mirrors.length) return;
  for (const endpoint of endpoints(router, conn, plan, req)) {
    const chunks: Buffer[] = [];
    let size = 0;
    let ended = false;
    let copy: http2.ClientHttp2Stream | undefined;
    let abandoned = false;
    const abandon = (why: string) => {
      if (abandoned) return;
      abandoned = true;
      trace('mirror abandoned', { mirror: `${endpoint.ip}:${endpoint.port}`, reason: why });
      if (copy && !copy.closed) copy.close(NGHTTP2_CANCEL);
      client.off('data', onData);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_MIRROR_BODY) return abandon('the body outgrew the mirror bound');
      if (copy) copy.write(chunk);
      else chunks.push(chunk);
    };
    client.on('data', onData);
    // A 'data' listener alone would start the flow before the primary's relay pipes
    // the stream upstream, and the primary would miss those chunks: stay paused
    // until that pipe resumes the stream, then both see every chunk.
    client.pause();
    client.once('end', () => {
      ended = true;
      copy?.end();
    });
    client.on('close', () => {
      if (!ended) abandon('the client stream closed first');
    });
    session(endpoint).then((s) => {
      if (abandoned) return;
      copy = s.request(headers);
      copy.setTimeout(MIRROR_TIMEOUT_MS, () => abandon('timed out'));
      copy.on('error', (err) => trace('mirror failed', { mirror: `${endpoint.ip}:${endpoint.port}`, error: err.message }));
      // The answer is not wanted: read it to its end so the stream closes.
      copy.resume();
      for (const c of chunks.splice(0)) copy.write(c);
      if (ended) copy.end();
    }, (err: Error) => abandon(`cannot connect: ${err.message}`));
  }
}
