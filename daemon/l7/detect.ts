// Protocol detection on the outbound side: the first bytes the application sends
// tell HTTP/1.x (a request line) or HTTP/2 with prior knowledge (the connection
// preface) from anything else. Bytes that cannot start either decide "opaque"
// at once; a client that sends nothing (a server-speaks-first protocol such as
// SMTP or MySQL) is given up on after a short timeout and carried as opaque TCP.

import type { Duplex } from 'node:stream';

export type DetectedProtocol = 'http1' | 'http2' | 'opaque';
export type HttpProtocol = Exclude<DetectedProtocol, 'opaque'>;

/**
 * 100 ms: a client that speaks first writes its request right after connect,
 * so its first bytes arrive within a millisecond or two on a node; 100 ms
 * leaves room for a busy event loop while a server-first protocol sees only a
 * tenth of a second before its greeting, far below its clients' timeouts (the
 * same default Istio used for its protocol sniffing).
 */
export const DEFAULT_DETECT_TIMEOUT_MS = 100;

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** A request line longer than this is not worth waiting for: carried as opaque. */
const MAX_REQUEST_LINE = 16 * 1024;
/** Longest method token we accept (e.g. "PROPPATCH", "VERSION-CONTROL"). */
const MAX_METHOD = 24;
const METHOD_PREFIX = /^(?:[A-Z][A-Z0-9_-]*)?$/;
const TARGET_CHARS = /^[\x21-\x7e]*$/;
const REQUEST_LINE = /^[A-Z][A-Z0-9_-]* [\x21-\x7e]+ HTTP\/1\.[01]$/;

/** What `head` (the first bytes of a connection) is, or 'more' when it cannot tell yet. */
export function classify(head: Buffer): DetectedProtocol | 'more' {
  const prefixLength = Math.min(head.length, H2_PREFACE.length);
  if (head.subarray(0, prefixLength).equals(H2_PREFACE.subarray(0, prefixLength))) {
    if (head.length >= H2_PREFACE.length) return 'http2';
    // "P", "PR", "PRI": still possibly an HTTP/1 method such as PRI... or PROPFIND; wait.
    return 'more';
  }
  const eol = head.indexOf('\r\n');
  const line = head.subarray(0, eol === -1 ? head.length : eol).toString('latin1');
  if (eol !== -1) return REQUEST_LINE.test(line) ? 'http1' : 'opaque';
  // An incomplete line: opaque as soon as it cannot be the start of a request line.
  if (line.length > MAX_REQUEST_LINE) return 'opaque';
  // A CR at the end may be the first half of a CRLF split across reads.
  const [method = '', target, version, ...extra] = line.replace(/\r$/, '').split(' ');
  if (method.length > MAX_METHOD || !METHOD_PREFIX.test(method)) return 'opaque';
  if (target !== undefined && !TARGET_CHARS.test(target)) return 'opaque';
  if (version !== undefined && !'HTTP/1.1'.startsWith(version) && !'HTTP/1.0'.startsWith(version)) return 'opaque';
  if (extra.length) return 'opaque';
  return 'more';
}

export interface Detection {
  protocol: DetectedProtocol;
  /** Bytes read while detecting; the caller must pass them on before the rest. */
  head: Buffer;
}

/**
 * Reads from `socket` until `classify` decides, the timeout expires (0: never)
 * or the client closes; leaves the socket paused with nothing consumed but `head`.
 */
export function detectProtocol(socket: Duplex, timeoutMs = DEFAULT_DETECT_TIMEOUT_MS): Promise<Detection> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (protocol: DetectedProtocol) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      resolve({ protocol, head: Buffer.concat(chunks, length) });
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      const verdict = classify(Buffer.concat(chunks, length));
      if (verdict !== 'more') finish(verdict);
    };
    const onEnd = () => finish('opaque');
    const timer = timeoutMs > 0 ? setTimeout(() => finish('opaque'), timeoutMs) : undefined;
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.on('close', onEnd);
  });
}
