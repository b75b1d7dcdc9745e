// For server-speaks-first protocols: `node first-byte-client.ts HOST PORT`
// connects, sends nothing, and prints one JSON line {greeting, connectedMs,
// greetingMs} (times from the start of the connect) once the server's first line
// arrives. Exits 2 on a connection error or 10 s of silence.
import { connect } from 'node:net';

const [host, portText] = process.argv.slice(2);
if (!host || !portText) {
  console.error('usage: first-byte-client.ts HOST PORT');
  process.exit(64);
}
const started = performance.now();
let connectedMs = -1;
let head = '';
const socket = connect({ host, port: Number(portText) }, () => (connectedMs = performance.now() - started));
socket.setTimeout(10_000, () => fail(`no greeting from ${host}:${portText} for 10 s`));
socket.on('error', (err) => fail(`${host}:${portText}: ${err.message}`));
socket.on('data', (data: Buffer) => {
  head += data.toString();
  const newline = head.indexOf('\n');
  if (newline < 0) return;
  console.log(JSON.stringify({ greeting: head.slice(0, newline), connectedMs, greetingMs: performance.now() - started }));
  socket.destroy();
});

function fail(reason: string): void {
  console.error(reason);
  process.exit(2);
}
