// An answer the mesh gives itself instead of the upstream's: 404 when no route
// rule matches, a RequestRedirect, 403 from authorization, 500 for an invalid
// backend, 502/503/504 when the upstream cannot answer. One value for HTTP/1 and
// HTTP/2, written out by the function of each protocol; the reason travels in the
// body so the client's logs say why. For a GRPCRoute the answer is a gRPC one
// (`grpcReply`): HTTP 200, trailers-only, the status in grpc-status and the
// reason in grpc-message, as gRPC clients read it.

import type http from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';

export class LocalReply {
  readonly status: number;
  readonly reason: string;
  readonly headers: Record<string, string>;
  /** A gRPC trailers-only answer: no body. */
  readonly grpc: boolean;
  constructor(status: number, reason: string, headers: Record<string, string> = {}, grpc = false) {
    this.status = status;
    this.reason = reason;
    this.headers = headers;
    this.grpc = grpc;
  }

  get body(): string {
    return this.reason && !this.grpc ? `${this.reason}\n` : '';
  }
}

/** gRPC status codes the mesh answers with. */
export const GrpcStatus = { UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14 } as const;

/** A gRPC status as the mesh's own answer, trailers-only. */
export function grpcReply(code: number, message: string): LocalReply {
  return new LocalReply(200, message, { 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': percentEncode(message) }, true);
}

/** The gRPC spec's percent-encoding: bytes outside printable ASCII, and "%" itself. */
function percentEncode(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte < 0x20 || byte > 0x7e || byte === 0x25 ? `%${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
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
  if (r.grpc) return void stream.respond({ ':status': r.status, ...r.headers }, { endStream: true });
  stream.respond({ ':status': r.status, 'content-type': 'text/plain; charset=utf-8', ...r.headers });
  stream.end(r.body);
}
