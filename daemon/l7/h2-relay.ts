// Relaying one HTTP/2 stream to another: the request body up, the response
// headers, body and trailers down as they come (so gRPC's grpc-status in
// trailers, or in a trailers-only answer, arrives untouched), and a reset on
// either side ends the other.

import http2 from 'node:http2';
import type { ClientHttp2Stream, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { HeaderModifier } from '../../core/types.ts';
import { modifyHeaders } from './filters.ts';
import { LocalReply, replyHttp2 } from './local-reply.ts';

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** Connection-specific headers HTTP/2 forbids, and ones the relay sets itself. */
export const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', ':status']);

/** Client stream <-> upstream stream; `onResponded` runs once, at the response or the failure. */
export function relayStream(stream: ServerHttp2Stream, up: ClientHttp2Stream, modifier: HeaderModifier | undefined, onResponded: () => void): void {
  let answered = false;
  const responded = () => {
    if (answered) return;
    answered = true;
    onResponded();
  };
  let trailers: IncomingHttpHeaders | undefined;
  stream.pipe(up);
  stream.on('close', () => {
    if (!up.closed) up.close(NGHTTP2_CANCEL);
  });
  up.on('trailers', (t) => (trailers = t));
  up.once('response', (headers, flags) => {
    responded();
    if (stream.destroyed) return;
    const out: Record<string, string | string[] | undefined> = {};
    for (const [name, value] of Object.entries(headers)) if (!NOT_FORWARDED.has(name) || name === ':status') out[name] = value;
    if (modifier) modifyHeaders(out, modifier);
    // A trailers-only answer (a gRPC error) stays one: no empty trailer frame after it.
    if (flags & NGHTTP2_FLAG_END_STREAM) return void stream.respond(out as OutgoingHttpHeaders, { endStream: true });
    stream.respond(out as OutgoingHttpHeaders, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(trailers ? withoutPseudo(trailers) : {}));
    up.pipe(stream);
  });
  up.on('error', (err) => {
    responded();
    if (stream.destroyed) return;
    if (stream.headersSent) stream.close(NGHTTP2_INTERNAL_ERROR);
    else replyHttp2(stream, new LocalReply(502, `upstream stream failed: ${err.message}`));
  });
  up.on('close', () => {
    responded();
    // Reset by the upstream before any response: the client must not wait.
    if (!stream.headersSent && !stream.destroyed) replyHttp2(stream, new LocalReply(502, `upstream reset the stream (code ${up.rstCode})`));
  });
}

function withoutPseudo(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !name.startsWith(':')));
}
