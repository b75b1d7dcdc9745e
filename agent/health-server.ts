// GET /healthz/ready (port 15021): 200 "ready" once every start-up task is done,
// else 503 naming the pending ones, for the kubelet's readiness probe.

import type { Readiness } from './readiness.ts';
import { ListeningHttpServer, listenHttp } from './http-listen.ts';

export class HealthServer extends ListeningHttpServer {
  static async listen(addr: string, readiness: Readiness): Promise<HealthServer> {
    const server = await listenHttp('health server', addr, (req, res) => {
      const path = new URL(req.url ?? '/', 'http://health').pathname;
      if (path !== '/healthz/ready') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the only endpoint is GET /healthz/ready\n');
        return;
      }
      if (readiness.ready()) {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
      } else {
        res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: pending: ${readiness.pending().join(', ')}\n`);
      }
    });
    return new HealthServer(server);
  }
}
