// HTTP server for L7 end-to-end tests: `node http-app.ts PORT NAME [log]`. Reads the
// whole request body counting its bytes (never keeping them), waits when the path
// starts with /delay/<ms>, then answers JSON {pod, method, path, headers, bytes}.
// Prints "listening on PORT" once bound, and with `log` "served METHOD PATH
// bytes=N" for every request, so a test can see what reached a pod whose answers
// nobody reads (a mirror).
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 8080);
const pod = process.argv[3] ?? 'unknown';
const DELAY = /^\/delay\/(\d+)/;
const logRequests = process.argv[4] === 'log';

const server = createServer((req, res) => {
  let bytes = 0;
  req.on('data', (chunk: Buffer) => (bytes += chunk.length));
  req.on('end', () => {
    if (logRequests) console.log(`served ${req.method} ${req.url} bytes=${bytes}`);
    const delayMs = Number(DELAY.exec(req.url ?? '')?.[1] ?? 0);
    setTimeout(() => {
      if (res.destroyed) return;
      const body = JSON.stringify({ pod, method: req.method, path: req.url, headers: req.headers, bytes });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, delayMs);
  });
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
