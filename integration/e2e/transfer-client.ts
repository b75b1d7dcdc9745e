// Bulk transfer client for end-to-end tests: `node transfer-client.ts HOST PORT BYTES`.
// Reads the server's greeting line, streams BYTES random bytes, half-closes, and
// hashes everything echoed after the greeting. Prints one JSON line
// {greeting, sentBytes, sentSha256, receivedBytes, receivedSha256} when the server
// closes, so gigabytes never pass through the test process. Exits 2 on a
// connection error or 30 s of silence.
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const [host, portText, bytesText] = process.argv.slice(2);
if (!host || !portText || !bytesText) {
  console.error('usage: transfer-client.ts HOST PORT BYTES');
  process.exit(64);
}
const total = Number(bytesText);
const CHUNK = 1 << 20;
const sent = createHash('sha256');
const received = createHash('sha256');
let sentBytes = 0;
let receivedBytes = 0;
let greeting: string | undefined;
let head = Buffer.alloc(0);

const socket = connect({ host, port: Number(portText) }, () => void send());
socket.setTimeout(30_000, () => fail(`no data from ${host}:${portText} for 30 s`));
socket.on('error', (err) => fail(`${host}:${portText}: ${err.message}`));

async function send(): Promise<void> {
  while (sentBytes < total) {
    const chunk = randomBytes(Math.min(CHUNK, total - sentBytes));
    sent.update(chunk);
    sentBytes += chunk.length;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
}

socket.on('data', (data: Buffer) => {
  if (greeting === undefined) {
    head = Buffer.concat([head, data]);
    const newline = head.indexOf(0x0a);
    if (newline < 0) return;
    greeting = head.subarray(0, newline).toString();
    data = head.subarray(newline + 1);
  }
  received.update(data);
  receivedBytes += data.length;
});

socket.on('end', () => {
  console.log(JSON.stringify({
    greeting: greeting ?? null, sentBytes, sentSha256: sent.digest('hex'), receivedBytes, receivedSha256: received.digest('hex'),
  }));
});

function fail(reason: string): void {
  console.error(reason);
  process.exit(2);
}
