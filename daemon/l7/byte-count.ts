// Byte counts of a duplex that keeps none itself (an HTTP/2 stream), for the TCP
// metrics of tunnels whose requests are parsed: reads counted as they arrive,
// writes as they are handed to the stream.

import type { Duplex } from 'node:stream';

export function countBytes(stream: Duplex): () => { received: number; sent: number } {
  const counts = { received: 0, sent: 0 };
  stream.on('data', (chunk: Buffer) => (counts.received += chunk.length));
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    counts.sent += typeof chunk === 'string' ? Buffer.byteLength(chunk, typeof rest[0] === 'string' ? (rest[0] as BufferEncoding) : 'utf8') : (chunk as Uint8Array).length;
    return write(chunk, ...rest);
  }) as Duplex['write'];
  return () => ({ ...counts });
}
