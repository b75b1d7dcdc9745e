// The control plane's status endpoint, for file mode above all (Kubernetes has
// the routes' status subresource): what it accepted and refused, as JSON.
//   GET /routes    every route with a Service parent: its status.parents[]
//                  (Accepted, ResolvedRefs with the Gateway API's reasons)
//   GET /rejected  every object refused, with its origin, field and reason
// Read-only: any other method is 405, any other path 404.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { BindError, ErrorCode, NodemeshError } from '../core/errors.ts';
import type { MeshModel } from './mesh-model.ts';

export async function serveStatus(listen: string, model: MeshModel): Promise<{ server: http.Server; address: string }> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    if (req.method !== 'GET') return send(405, { error: `${req.method} is not allowed: the status endpoint is read-only` });
    const path = new URL(req.url ?? '/', 'http://status.invalid').pathname;
    if (path === '/routes') return send(200, { routes: model.routeStatuses() });
    if (path === '/rejected') return send(200, { rejected: model.rejected() });
    send(404, { error: `no ${path}; endpoints: /routes, /rejected` });
  });
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen);
  if (!m) throw new NodemeshError(ErrorCode.BAD_ADDRESS, `status endpoint address ${JSON.stringify(listen)}: expected host:port (e.g. 127.0.0.1:15014)`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new BindError('control plane status endpoint', listen, err)));
    server.listen(Number(m[3]), m[1] ?? m[2] ?? '', () => resolve());
  });
  const bound = server.address() as AddressInfo;
  return { server, address: `${bound.address.includes(':') ? `[${bound.address}]` : bound.address}:${bound.port}` };
}
