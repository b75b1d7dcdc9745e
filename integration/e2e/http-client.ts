// HTTP client for L7 end-to-end tests: `node http-client.ts HOST PORT`. Keeps ONE
// keep-alive connection and sends the requests it reads from stdin, one JSON line
// each ({id, method?, path, headers?}), in order on that connection. For each
// answer it prints one JSON line {id, status, headers, body, localPort, ms}; a
// failed request prints {id, status: 0, error}. The local port tells a test
// whether every request used the same connection. Prints "ready" at start.
import http from 'node:http';
import { createInterface } from 'node:readline';

const [host, portText] = process.argv.slice(2);
if (!host || !portText) {
  console.error('usage: http-client.ts HOST PORT');
  process.exit(64);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

interface Ask {
  id: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
}

function send(ask: Ask): void {
  const started = performance.now();
  const req = http.request({ host, port: Number(portText), method: ask.method ?? 'GET', path: ask.path, headers: ask.headers, agent }, (res) => {
    // Read now: the socket goes back to the agent once the response ends.
    const localPort = res.socket.localPort;
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => (body += c));
    res.on('end', () => {
      console.log(JSON.stringify({ id: ask.id, status: res.statusCode, headers: res.headers, body, localPort, ms: performance.now() - started }));
    });
  });
  req.on('error', (err) => console.log(JSON.stringify({ id: ask.id, status: 0, error: err.message, ms: performance.now() - started })));
  req.end();
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) send(JSON.parse(line) as Ask);
}).on('close', () => agent.destroy());
console.log('ready');
