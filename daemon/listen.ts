// Binding a listener: resolves with the bound port, rejects with BindError (so
// start-up stops with a message naming the listener and the address).

import type { AddressInfo, Server, Socket } from 'node:net';
import { BindError } from '../core/errors.ts';

/** Where a listener listens: `host:port`, or a listening socket made in a pod's namespace (`fd`, see pod-socket.ts). */
export interface ListenAt {
  host: string;
  port: number;
  fd?: number;
}

export function listen(server: Server, what: string, at: ListenAt): Promise<number> {
  const { host, port, fd } = at;
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new BindError(what, fd === undefined ? `${host}:${port}` : `fd ${fd}`, err));
    server.once('error', onError);
    // SO_REUSEPORT: during an upgrade the new daemon binds beside the old one and the
    // kernel spreads new connections over both until the old one stops accepting.
    server.listen(fd === undefined ? { host, port, reusePort: true } : { fd }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Stops accepting now. Open connections are not touched (net.Server's close
 * callback would wait for them all, which is the caller's job).
 */
export function stopListening(server: Server): void {
  if (server.listening) server.close();
}

/** The listening socket's fd (-1 once closed), to find it among the node's listeners (handover.ts). */
export function listeningFd(server: Server): number {
  return (server as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
}

/** The server's accepted sockets that are still open, so shutdown can reach ones not yet proxied. */
export function openSockets(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return sockets;
}
