// Binding a listener: resolves with the bound port, rejects with BindError (so
// start-up stops with a message naming the listener and the address).

import type { Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { BindError } from '../core/errors.ts';

export function listen(server: Server, what: string, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new BindError(what, `${host}:${port}`, err));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting; resolves once the listening socket is closed (open connections are not touched). */
export function stopListening(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
