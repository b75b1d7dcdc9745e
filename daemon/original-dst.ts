// The destination a connection was addressed to before iptables REDIRECTed it to
// one of our listeners, read with getsockopt(SO_ORIGINAL_DST) through koffi.
// IPv4 only: the capture rules are iptables (not ip6tables) rules.

import type { Socket } from 'node:net';
import koffi from 'koffi';
import { ErrorCode, NodemeshError } from '../core/errors.ts';

const SOL_IP = 0;
const SO_ORIGINAL_DST = 80;
const ENOENT = 2;
const SOCKADDR_IN_SIZE = 16;

const libc = koffi.load('libc.so.6');
const getsockopt = libc.func('int getsockopt(int, int, int, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)');

export interface SocketAddress {
  ip: string;
  port: number;
}

/** The pre-NAT destination of an accepted socket, or null when it was not redirected (dialled directly). */
export function originalDestination(socket: Socket): SocketAddress | null {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new NodemeshError(ErrorCode.ORIGINAL_DST, 'SO_ORIGINAL_DST: socket has no file descriptor (already closed?)');
  }
  const addr = Buffer.alloc(SOCKADDR_IN_SIZE);
  const len = [SOCKADDR_IN_SIZE];
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, addr, len) !== 0) {
    const errno = koffi.errno();
    // ENOENT: conntrack holds no NAT entry, i.e. the peer dialled our port directly.
    if (errno === ENOENT) return null;
    throw new NodemeshError(ErrorCode.ORIGINAL_DST, `SO_ORIGINAL_DST failed with errno ${errno}: check that the nf_conntrack module is loaded and the socket is IPv4`);
  }
  const original = { ip: `${addr[4]}.${addr[5]}.${addr[6]}.${addr[7]}`, port: addr.readUInt16BE(2) };
  // Conntrack also answers for connections it did not NAT: then the original
  // destination is our own address, which means the peer dialled us directly.
  const local = socket.localAddress?.replace(/^::ffff:/, '');
  if (original.ip === local && original.port === socket.localPort) return null;
  return original;
}
