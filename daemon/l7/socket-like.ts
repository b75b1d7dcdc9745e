// HTTP/1 carried in HBONE streams: node:http and http-proxy treat the stream as
// a socket. They call socket-only methods (setNoDelay, setKeepAlive, ref, unref),
// which an HTTP/2 stream lacks and which mean nothing for a tunnel: no-ops here.
//
// node:http also corks a message head (a latin1 string) together with its body. On an
// HTTP/2 stream such a mixed writev arrived corrupted at the other end (seen with
// node 24: the first bytes of the head replaced by garbage, typically on streams
// that carried earlier messages), while Buffers arrive intact. HTTP/1 carried in
// HBONE streams therefore writes Buffers only.

import type { Duplex } from 'node:stream';

type WriteRequest = { chunk: unknown; encoding: BufferEncoding };
type Writev = (chunks: WriteRequest[], cb: (err?: Error | null) => void) => void;

export function socketLike<T extends Duplex>(stream: T): T {
  const s = stream as Duplex & Record<string, unknown>;
  for (const method of ['setNoDelay', 'setKeepAlive', 'ref', 'unref']) {
    if (typeof s[method] !== 'function') s[method] = () => stream;
  }
  writeBuffersOnly(stream);
  return stream;
}

function writeBuffersOnly(stream: Duplex): void {
  const s = stream as Duplex & { _writev?: Writev };
  const writev = s._writev;
  if (!writev) return;
  s._writev = function (chunks, cb) {
    const buffers = chunks.map((c) => ({ chunk: typeof c.chunk === 'string' ? Buffer.from(c.chunk, c.encoding) : c.chunk, encoding: 'buffer' as BufferEncoding }));
    return writev.call(stream, Object.assign(buffers, { allBuffers: true }), cb);
  };
}
