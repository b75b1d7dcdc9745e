// What the two capture listeners (outbound 15001, inbound plaintext 15006) share:
// a TCP server that binds or stops start-up, reads each accepted connection's
// original destination (the address before REDIRECT), and refuses with a reset —
// so the application sees the failure — and a log line saying why. Subclasses
// decide what to do with a redirected connection.

import net from 'node:net';
import type { Logger } from '../core/log.ts';
import { originalDestination } from './original-dst.ts';
import type { SocketAddress } from './original-dst.ts';
import { unmapIpv4 } from './authorization.ts';
import { listen, listeningFd, openSockets, stopListening } from './listen.ts';
import type { ListenAt } from './listen.ts';

export type DestinationOf = (socket: net.Socket) => SocketAddress | null;

export interface CapturedConnection {
  client: net.Socket;
  sourceIp: string;
  destination: SocketAddress;
}

export abstract class CapturedListener {
  /** "outbound", "inbound plaintext": names the listener in errors and log lines. */
  protected readonly name: string;
  protected readonly log: Logger;
  readonly #server = net.createServer({ allowHalfOpen: true, noDelay: true });
  readonly #sockets = openSockets(this.#server);
  #port = 0;

  protected constructor(name: string, log: Logger) {
    this.name = name;
    this.log = log;
  }

  protected abstract onConnection(conn: CapturedConnection): void;

  /** Binds `host:port` (or serves `fd`); rejects with BindError. */
  protected async listen(at: ListenAt, destinationOf: DestinationOf = originalDestination): Promise<void> {
    this.#port = await listen(this.#server, `${this.name} listener`, at);
    this.#server.on('connection', (client) => {
      const sourceIp = unmapIpv4(client.remoteAddress ?? '');
      client.on('error', (err) => this.log.debug('client connection error', { sourceIp, error: err.message }));
      let destination: SocketAddress | null;
      try {
        destination = destinationOf(client);
      } catch (err) {
        return this.refuse(client, 'cannot read the original destination', { sourceIp, error: (err as Error).message });
      }
      if (!destination) return this.refuse(client, `connection was not redirected (dialled the ${this.name} port directly?)`, { sourceIp });
      this.onConnection({ client, sourceIp, destination });
    });
  }

  get fd(): number {
    return listeningFd(this.#server);
  }

  get port(): number {
    return this.#port;
  }

  stopAccepting(): void {
    stopListening(this.#server);
  }

  close(): void {
    this.stopAccepting();
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Resets the client and logs why, as "<name> connection refused: <reason>". */
  protected refuse(client: net.Socket, reason: string, fields: Record<string, unknown>): void {
    this.log.warn(`${this.name} connection refused: ${reason}`, fields);
    this.refuseSilently(client);
  }

  /** Resets the client; for refusals already logged where they were decided (admission). */
  protected refuseSilently(client: net.Socket): void {
    if (!client.destroyed) client.resetAndDestroy();
  }
}
