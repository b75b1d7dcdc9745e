// Forwarding one HTTP/1 message to the next hop with node:http, for both sides of
// the node: the request's headers as the upstream gets them, and the upstream's
// response written back to the client. node:http and not http-proxy for plain
// requests: its per-request passes (option copies, URL joins, header rewrites)
// cost the source side 0.1 s of CPU per 1,000 requests; it still carries
// upgrades (WebSocket), where its socket handling earns its keep.

import type http from 'node:http';
import type { HeaderModifier } from '../../core/types.ts';
import { appendToList, modifyHeaders } from './filters.ts';

/**
 * Headers about one connection, not the message (RFC 9110 7.6.1), less
 * transfer-encoding: dropped from a request on its way, which node:http frames
 * by its transfer-encoding (dropping it from a chunked GET would send the
 * chunks unframed).
 */
const REQUEST_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer']);

/** Headers about one connection, not the message, transfer-encoding too: node:http writes its own. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([...REQUEST_HOP_BY_HOP, 'transfer-encoding']);

/**
 * The request's headers as the next hop gets them: without the ones about the
 * client's connection (RFC 9110 7.6.1: Connection, the headers it names,
 * Keep-Alive and the like), and, with `forwardedFor`, with the client's address,
 * port and scheme appended to x-forwarded-* (as a forward proxy does). A
 * bodiless DELETE or OPTIONS is given content-length: 0 (some servers wait for
 * a body otherwise). A forwarded `connection: close` made the pod close each
 * pooled upstream connection after one request.
 * A flat [name, value, ...] list, not an object: node:http writes a list as it
 * comes, where an object costs a setHeader per header (a lowercased name and an
 * entry each): 1.1 KiB of the 34 a proxied request allocated (l7-inprocess.ts).
 */
export function forwardedRequestHeaders(req: http.IncomingMessage, forwardedFor = true): string[] {
  const headers: (string | string[])[] = [];
  const connection = req.headers.connection;
  // Most clients send none or a bare keep-alive/close: no other header to drop.
  const named = connection && !BARE_CONNECTION.test(connection) ? connectionTokens(connection) : undefined;
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value === undefined || REQUEST_HOP_BY_HOP.has(name) || named?.has(name)) continue;
    if (forwardedFor && FORWARDED.has(name)) continue;
    headers.push(name, value);
  }
  if (forwardedFor) {
    headers.push(
      'x-forwarded-for', appendToList(req.headers['x-forwarded-for'], req.socket.remoteAddress ?? ''),
      'x-forwarded-port', appendToList(req.headers['x-forwarded-port'], hostPort(req.headers.host) ?? '80'),
      'x-forwarded-proto', appendToList(req.headers['x-forwarded-proto'], 'http'),
    );
  }
  if ((req.method === 'DELETE' || req.method === 'OPTIONS') && bodiless(req)) headers.push('content-length', '0');
  // A value may be a list (set-cookie): node:http writes one line per item. Its declared type has strings only.
  return headers as string[];
}

/**
 * The header names a Connection header lists, lowercased, less those that frame
 * the message: a client naming content-length would otherwise have its body
 * forwarded unframed, read by the pod as a next request of its own.
 */
function connectionTokens(connection: string): Set<string> {
  const named = new Set(connection.split(',').map((token) => token.trim().toLowerCase()));
  for (const kept of FRAMING) named.delete(kept);
  return named;
}

const FRAMING = ['host', 'content-length', 'transfer-encoding'];

/** A Connection header that names no other header. */
const BARE_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i;

/** Headers forwardedRequestHeaders writes itself. */
const FORWARDED = new Set(['x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto']);

/** A request with neither a length nor chunks: it has no body to read or send. */
export function bodiless(req: http.IncomingMessage): boolean {
  return req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
}

/** The port a Host header names, if any. */
function hostPort(host: string | undefined): string | undefined {
  const match = host ? /:(\d+)$/.exec(host) : null;
  return match?.[1];
}

/** Writes the upstream's response to the client: status, end-to-end headers (modified as a route says), body and trailers, streamed. */
export function forwardResponse(response: http.IncomingMessage, res: http.ServerResponse, modifier?: HeaderModifier): void {
  const headers: Record<string, string | string[] | undefined> = {};
  for (const name in response.headers) if (!HOP_BY_HOP.has(name)) headers[name] = response.headers[name];
  if (modifier) modifyHeaders(headers, modifier);
  res.writeHead(response.statusCode ?? 502, response.statusMessage, headers as http.OutgoingHttpHeaders);
  // A body of unknown length may be a stream (server-sent events) that must not wait for its first
  // event: its headers go out now. A sized body's headers go out with its first bytes, in one write
  // (each write to a socket is a system call: flushing first cost one more per response).
  if (response.headers['content-length'] === undefined) res.flushHeaders();
  response.on('error', () => res.destroy());
  // Not pipe(): its seven listeners and state per response were 4% of the bytes a proxied request allocates.
  response.on('data', (chunk: Buffer) => {
    if (!res.write(chunk)) response.pause();
  });
  res.on('drain', () => response.resume());
  response.once('end', () => {
    if (Object.keys(response.trailers).length) res.addTrailers(response.trailers as Record<string, string>);
    res.end();
  });
}
