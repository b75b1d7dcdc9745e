// HTTP server for test pods: `node http-server.ts PORT POD`. Answers every request
// with JSON {pod, method, path, remoteAddress, headers}, so a test sees who served it
// and what arrived. Prints "listening" once bound.
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 8080);
const pod = process.argv[3] ?? 'unknown';
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ pod, method: req.method, path: req.url, remoteAddress: req.socket.remoteAddress, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
