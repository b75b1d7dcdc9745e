// Plays a peer node dialling HBONE: `node hbone-probe.ts HOST PORT AUTHORITY MODE
// [CERT KEY [FORWARDED_FOR]]`. MODE "tls" opens TLS 1.3 with ALPN h2 (presenting CERT
// and KEY when given, and trusting any server certificate), "plaintext" speaks HTTP/2 in clear.
// Then it sends CONNECT AUTHORITY (with `Forwarded: for=FORWARDED_FOR` when given:
// the source pod, which must be a workload of CERT's identity) and, when answered 200, a line, and reads what
// comes back. Prints one JSON line {status, reply, error}: status is the CONNECT
// response status or null when no response came.
import http2 from 'node:http2';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

const [host, portText, authority, mode, certFile, keyFile, forwardedFor] = process.argv.slice(2);
if (!host || !portText || !authority || (mode !== 'tls' && mode !== 'plaintext')) {
  console.error('usage: hbone-probe.ts HOST PORT AUTHORITY tls|plaintext [CERT KEY [FORWARDED_FOR]]');
  process.exit(64);
}
const port = Number(portText);
const result: { status: number | null; reply: string; error: string | null } = { status: null, reply: '', error: null };

const session = mode === 'plaintext'
  ? http2.connect(`http://${host}:${port}`)
  : http2.connect(`https://${host}:${port}`, {
    createConnection: () => tls.connect({
      host, port, servername: '', ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', rejectUnauthorized: false,
      ...(certFile && keyFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : {}),
    }),
  });
session.on('error', (err) => (result.error ??= err.message));
// A session over a custom connection may never emit 'close': the stream's close ends the probe.
session.on('close', finish);
const timer = setTimeout(() => {
  result.error ??= 'no outcome within 5 s';
  finish();
}, 5000);

const stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...(forwardedFor ? { forwarded: `for=${forwardedFor}` } : {}) }, { endStream: false });
stream.on('error', (err) => (result.error ??= err.message));
stream.on('response', (headers) => {
  result.status = Number(headers[':status']);
  if (result.status === 200) stream.end('probe\n');
});
stream.on('data', (chunk: Buffer) => (result.reply += chunk.toString()));
stream.on('close', finish);

let finished = false;
function finish(): void {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  session.destroy();
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}
