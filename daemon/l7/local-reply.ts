// An answer the mesh gives itself instead of the upstream's: 404 when no route
// rule matches, a RequestRedirect, 403 from authorization, 500 for an invalid
// backend, 502/503/504 when the upstream cannot answer. One value for HTTP/1 and
// HTTP/2, written out by the function of each protocol; the reason travels in the
// body so the client's logs say why.

import type http from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';

export class LocalReply {
  readonly status: number;
  readonly reason: string;
  readonly headers: Record<string, string>;
  constructor(status: number, reason: string, headers: Record<string, string> = {}) {
    this.status = status;
    this.reason = reason;
    this.headers = headers;
  }

  get body(): string {
    return this.reason ? `${this.reason}\n` : '';
  }
}

/** Answers an HTTP/1 request, unless its response has started (then it is cut). */
export function replyHttp1(res: http.ServerResponse, r: LocalReply): void {
  if (res.headersSent || res.destroyed) return void res.destroy();
  const body = r.body;
  res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...r.headers });
  res.end(body);
}

/** Answers an HTTP/2 stream, unless it already has an answer. */
export function replyHttp2(stream: ServerHttp2Stream, r: LocalReply): void {
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ':status': r.status, 'content-type': 'text/plain; charset=utf-8', ...r.headers });
  stream.end(r.body);
}
