// TCP server for end-to-end tests: `node logged-greeter.ts PORT NAME`. Greets each
// connection with "hello from NAME\n", then echoes. Prints "listening on PORT" once
// bound and "accepted from IP:PORT" for every connection, so a test can tell which
// pod answered and count what actually reached the pod.
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7000);
const name = process.argv[3] ?? 'greeter';
const server = createServer((socket) => {
  console.log(`accepted from ${socket.remoteAddress}:${socket.remotePort}`);
  socket.on('error', () => socket.destroy());
  socket.write(`hello from ${name}\n`);
  socket.pipe(socket);
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
