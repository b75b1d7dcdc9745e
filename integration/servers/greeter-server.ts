// TCP server that speaks first, like SMTP or MySQL: `node greeter-server.ts PORT NAME`.
// Sends "hello from NAME\n" on connect, then echoes. Prints "listening" once bound.
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7001);
const name = process.argv[3] ?? 'greeter';
const server = createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.write(`hello from ${name}\n`);
  socket.pipe(socket);
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
