// What the two capture listeners (outbound 15001, inbound plaintext 15006) share:
// a TCP server that binds or stops start-up, reads each accepted connection's
// original destination (the address before REDIRECT), and refuses with a reset —
// so the application sees the failure — and a log line saying why.

import net from 'node:net';
import type { Logger } from '../core/log.ts';
import { originalDestination } from './original-dst.ts';
import type { SocketAddress } from './original-dst.ts';
import { unmapIpv4 } from './authorization.ts';
import { listen, openSockets, stopListening } from './listen.ts';

export type DestinationOf = (socket: net.Socket) => SocketAddress | null;

export interface CapturedConnection {
  client: net.Socket;
  sourceIp: string;
  destination: SocketAddress;
}

export class CapturedListener {
  readonly port: number;
  readonly #server: net.Server;
  readonly #sockets: Set<net.Socket>;

  private constructor(server: net.Server, port: number) {
    this.#server = server;
    this.port = port;
    this.#sockets = openSockets(server);
  }

  /**
   * Binds `host:port` as the `name` listener ("outbound"); each redirected connection
   * goes to `onConnection`, anything else is refused.
   */
  static async bind(opts: {
    name: string;
    host: string;
    port: number;
    log: Logger;
    destinationOf?: DestinationOf;
    onConnection: (conn: CapturedConnection) => void;
  }): Promise<CapturedListener> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    const port = await listen(server, `${opts.name} listener`, opts.host, opts.port);
    const listener = new CapturedListener(server, port);
    const destinationOf = opts.destinationOf ?? originalDestination;
    const { log } = opts;
    server.on('connection', (client) => {
      const sourceIp = unmapIpv4(client.remoteAddress ?? '');
      client.on('error', (err) => log.debug('client connection error', { sourceIp, error: err.message }));
      let destination: SocketAddress | null;
      try {
        destination = destinationOf(client);
      } catch (err) {
        return refuse(log, opts.name, client, 'cannot read the original destination', { sourceIp, error: (err as Error).message });
      }
      if (!destination) return refuse(log, opts.name, client, `connection was not redirected (dialled the ${opts.name} port directly?)`, { sourceIp });
      opts.onConnection({ client, sourceIp, destination });
    });
    return listener;
  }

  stopAccepting(): void {
    stopListening(this.#server);
  }

  close(): void {
    this.stopAccepting();
    for (const socket of this.#sockets) socket.destroy();
  }
}

/** Resets the client and logs why, as "<name> connection refused: <reason>". */
export function refuse(log: Logger, name: string, client: net.Socket, reason: string, fields: Record<string, unknown>): void {
  log.warn(`${name} connection refused: ${reason}`, fields);
  if (!client.destroyed) client.resetAndDestroy();
}
