// Opening the upstream TCP connection of a proxied connection: half-open allowed
// (so a FIN travels end to end), no Nagle delay, bounded connect time.

import net from 'node:net';
import { PeerError } from '../core/errors.ts';

export const CONNECT_TIMEOUT_MS = 10_000;

export function connectTcp(ip: string, port: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true });
    const fail = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () => fail(new PeerError(`connect to ${ip}:${port} timed out after ${timeoutMs} ms: is the workload listening and reachable from the node?`)));
    socket.once('error', fail);
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.off('error', fail);
      resolve(socket);
    });
  });
}
