// GET /metrics (port 15020): the Prometheus text exposition of a prom-client registry.

import { logger } from '../core/log.ts';
import { ListeningHttpServer, listenHttp } from './http-listen.ts';

const log = logger('metrics');

/** What /metrics serves: a prom-client Registry, or the data plane's sum of its workers' (daemon/workers.ts). */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export class MetricsServer extends ListeningHttpServer {
  static async listen(addr: string, registry: MetricsSource): Promise<MetricsServer> {
    const server = await listenHttp('metrics server', addr, (req, res) => {
      const path = new URL(req.url ?? '/', 'http://metrics').pathname;
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the only endpoint is GET /metrics\n');
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => {
          log.error('collecting metrics failed', { error: err.message });
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${err.message}\n`);
        },
      );
    });
    return new MetricsServer(server);
  }
}
