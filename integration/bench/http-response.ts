// Framing HTTP/1.1 responses read off a raw socket, for the bench's own load
// clients (they speak HTTP by hand to keep per-request cost out of the measure).

const HEADER_END = Buffer.from('\r\n\r\n');

/** Length of the first complete response in `buf` (headers and a Content-Length body), or 0 while it is incomplete. */
export function completeResponse(buf: Buffer): number {
  const end = buf.indexOf(HEADER_END);
  if (end < 0) return 0;
  const length = /content-length:\s*(\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
  const total = end + 4 + Number(length?.[1] ?? 0);
  return buf.length >= total ? total : 0;
}
