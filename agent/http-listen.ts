// Binding the agent's HTTP servers: "host:port" (IPv6 as "[::1]:15000"), port 0
// for an ephemeral port; a bind failure rejects with BindError so start-up stops.

import { createServer } from 'node:http';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BindError, ErrorCode, NodemeshError } from '../core/errors.ts';

export function parseHostPort(what: string, addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new NodemeshError(ErrorCode.BAD_ADDRESS, `${what}: ${JSON.stringify(addr)} is not host:port (e.g. 127.0.0.1:15000 or [::1]:15000)`);
  return { host: (m[1] ?? m[2])!, port };
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function listenHttp(what: string, addr: string, handler: RequestListener): Promise<Server> {
  const { host, port } = parseHostPort(what, addr);
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new BindError(what, addr, err)));
    // SO_REUSEPORT, as the data plane's listeners: an upgraded agent binds beside the
    // old one, which closes its servers when it is told to stop.
    server.listen({ port, host, reusePort: true }, () => resolve());
  });
  return server;
}

/** An agent HTTP server once bound: where it listens, and how to stop it. */
export class ListeningHttpServer {
  protected readonly server: Server;

  protected constructor(server: Server) {
    this.server = server;
  }

  /** The bound "host:port", with the real port when 0 was asked for. */
  get address(): string {
    const a = this.server.address() as AddressInfo;
    return formatHostPort(a.address, a.port);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
