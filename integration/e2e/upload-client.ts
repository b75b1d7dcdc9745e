// Streams an HTTP upload from a pod: `node upload-client.ts HOST PORT BYTES`.
// POSTs BYTES bytes (a 1 MiB random block repeated, so the client spends no time
// generating them) with a content-length, respecting backpressure, and prints one
// JSON line {status, body, ms}. Exits 2 on a connection error.
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const [host, portText, bytesText] = process.argv.slice(2);
if (!host || !portText || !bytesText) {
  console.error('usage: upload-client.ts HOST PORT BYTES');
  process.exit(64);
}
const total = Number(bytesText);
const block = randomBytes(1 << 20);
const started = performance.now();
const req = http.request({ host, port: Number(portText), method: 'POST', path: '/upload', headers: { 'content-type': 'application/octet-stream', 'content-length': total } }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (c: string) => (body += c));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body, ms: performance.now() - started })));
});
req.on('error', (err) => {
  console.error(`${host}:${portText}: ${err.message}`);
  process.exit(2);
});
let sent = 0;
async function send(): Promise<void> {
  while (sent < total) {
    const chunk = block.subarray(0, Math.min(block.length, total - sent));
    sent += chunk.length;
    if (!req.write(chunk)) await new Promise((resolve) => req.once('drain', resolve));
  }
  req.end();
}
void send();
