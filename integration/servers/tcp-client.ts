// TCP client for test pods: `node tcp-client.ts HOST PORT [TEXT]` sends TEXT, half-closes
// and prints everything received until the server closes. With TEXT "-" it pipes stdin
// to the connection and the connection to stdout, and prints "connected" on stderr.
// Exits 2 with the reason on stderr when the connection fails or (except with "-")
// stays silent for 10 s.
import { connect } from 'node:net';

const [host, portText, text] = process.argv.slice(2);
if (!host || !portText) {
  console.error('usage: tcp-client.ts HOST PORT [TEXT|-]');
  process.exit(64);
}
const socket = connect({ host, port: Number(portText) }, () => {
  console.error('connected');
  if (text === '-') {
    process.stdin.pipe(socket);
  } else {
    socket.end(text ?? '');
  }
});
if (text !== '-') {
  socket.setTimeout(10_000, () => {
    console.error(`no data from ${host}:${portText} for 10 s`);
    process.exit(2);
  });
}
socket.pipe(process.stdout);
socket.on('error', (err) => {
  console.error(`${host}:${portText}: ${err.message}`);
  process.exit(2);
});
socket.on('close', () => process.exitCode ??= 0);
