// The noisy pod of the fairness row: tries to open COUNT keep-alive HTTP
// connections to HOST:PORT (in batches; each completes one request, so it is
// tunnelled end to end), counts those refused (reset or closed before any
// response), prints "held N refused M", then ping-pongs requests on every held
// connection as fast as the responses come (closed loop, one in flight per
// connection) until stdin closes, and prints one JSON line: attempted, held,
// refused, requests, seconds.
//
//   node flood-client.ts HOST PORT COUNT

import net from 'node:net';
import { completeResponse } from './http-response.ts';

const [host, portText, countText] = process.argv.slice(2);
if (!host || !portText || !countText) {
  console.error('usage: flood-client.ts HOST PORT COUNT');
  process.exit(64);
}
const BATCH = 50;
const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);

let requests = 0;
let flooding = false;

/** Resolves with the socket after its first response, or null when the mesh refused it. */
function openOne(): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(portText), noDelay: true }, () => socket.write(request));
    let buffer: Buffer = Buffer.alloc(0);
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      for (let length = completeResponse(buffer); length > 0; length = completeResponse(buffer)) {
        buffer = buffer.subarray(length);
        if (!answered) {
          answered = true;
          resolve(socket);
        } else {
          requests++;
        }
        if (flooding) socket.write(request);
      }
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      if (!answered) resolve(null);
    });
  });
}

const held: net.Socket[] = [];
let refused = 0;
const attempted = Number(countText);
for (let left = attempted; left > 0; left -= BATCH) {
  for (const s of await Promise.all(Array.from({ length: Math.min(BATCH, left) }, openOne))) {
    if (s) held.push(s);
    else refused++;
  }
}
console.log(`held ${held.length} refused ${refused}`);
const started = performance.now();
flooding = true;
for (const s of held) s.write(request);
process.stdin.resume();
process.stdin.on('end', () => {
  flooding = false;
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ attempted, held: held.length, refused, requests, seconds: Math.round(seconds * 10) / 10 }));
  for (const s of held) s.destroy();
});
