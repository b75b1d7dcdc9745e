// Load for the rolling-upgrade test, run in a client pod until SIGTERM:
//   node upgrade-load.ts HTTP_HOST:PORT TCP_HOST:PORT
// keep-alive HTTP requests back to back, a new TCP connection every 20 ms (each
// must be greeted), and one long-lived TCP connection echoing a line every
// 100 ms. Prints "running" once all three have worked once, and on SIGTERM one
// JSON line: counts, failures (the first few, with their errors) and how the
// long-lived connection ended.
import http from 'node:http';
import net from 'node:net';

const [httpTarget, tcpTarget] = process.argv.slice(2);
const [httpHost, httpPort] = httpTarget!.split(':');
const [tcpHost, tcpPort] = tcpTarget!.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
const stats = { requests: 0, failedRequests: 0, connections: 0, failedConnections: 0, errors: [] as string[], longLived: { echoes: 0, ended: null as string | null } };
let stopping = false;
const note = (what: string) => {
  if (stats.errors.length < 10) stats.errors.push(`${new Date().toISOString()} ${what}`);
};

function request(): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get({ host: httpHost, port: Number(httpPort), path: '/upgrade', agent }, (res) => {
      res.resume();
      res.on('end', () => {
        stats.requests++;
        if (res.statusCode !== 200) {
          stats.failedRequests++;
          note(`HTTP ${res.statusCode}`);
        }
        resolve();
      });
      res.on('error', (err) => {
        stats.failedRequests++;
        note(`HTTP response: ${err.message}`);
        resolve();
      });
    });
    req.on('error', (err) => {
      stats.requests++;
      stats.failedRequests++;
      note(`HTTP: ${err.message}`);
      resolve();
    });
  });
}

function connectOnce(): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: tcpHost, port: Number(tcpPort) });
    let greeted = false;
    socket.setTimeout(5000, () => socket.destroy(new Error('no greeting within 5 s')));
    socket.on('data', (d) => {
      if (String(d).startsWith('hello from ')) greeted = true;
      socket.end();
    });
    socket.on('error', (err) => note(`connection: ${err.message}`));
    socket.on('close', () => {
      stats.connections++;
      if (!greeted) stats.failedConnections++;
      resolve();
    });
  });
}

const long = net.connect({ host: tcpHost, port: Number(tcpPort) });
let buffered = '';
long.on('data', (d) => {
  buffered += String(d);
  stats.longLived.echoes = (buffered.match(/^tick$/gm) ?? []).length;
});
long.on('error', (err) => (stats.longLived.ended ??= `error: ${err.message}`));
long.on('close', () => (stats.longLived.ended ??= 'closed'));
const ticker = setInterval(() => long.write('tick\n'), 100);

async function loop(step: () => Promise<void>, pauseMs: number): Promise<void> {
  while (!stopping) {
    await step();
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

await request();
await connectOnce();
process.stdout.write('running\n');
void loop(request, 2);
void loop(connectOnce, 20);
process.on('SIGTERM', () => {
  stopping = true;
  clearInterval(ticker);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
});
