// TCP echo server for test pods: `node echo-server.ts PORT`. Prints "listening" once bound.
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7000);
const server = createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
