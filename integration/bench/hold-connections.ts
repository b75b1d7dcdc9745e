// Opens COUNT keep-alive HTTP connections to HOST:PORT, completes one request on
// each (so every one is tunnelled end to end), prints "held COUNT" and keeps them
// open until stdin closes.
//
//   node hold-connections.ts HOST PORT COUNT

import net from 'node:net';

const [host, portText, countText] = process.argv.slice(2);
if (!host || !portText || !countText) {
  console.error('usage: hold-connections.ts HOST PORT COUNT');
  process.exit(64);
}
const BATCH = 50;

function openOne(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: Number(portText) }, () => socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    let seen = '';
    const onData = (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      if (!seen.startsWith('HTTP/1.1 200')) {
        if (seen.length >= 12) reject(new Error(`${host}:${portText}: unexpected response ${JSON.stringify(seen.slice(0, 40))}`));
        return;
      }
      socket.off('data', onData);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

const sockets: net.Socket[] = [];
try {
  for (let left = Number(countText); left > 0; left -= BATCH) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, left) }, openOne))));
  }
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
for (const s of sockets) s.on('error', () => {});
console.log(`held ${sockets.length}`);
process.stdin.resume();
process.stdin.on('end', () => {
  for (const s of sockets) s.destroy();
});
