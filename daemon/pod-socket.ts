// Sockets created inside a pod's network namespace (netns.ts) and then served
// by the node process: the listening sockets of the proxy's listeners for that
// pod, and the connections that deliver to the pod's application. The fds are
// made with socket(2) through koffi because Node creates its sockets later than
// the call that asks for them (after a DNS step or a tick), when the thread is
// back in the node's namespace; a finished fd is handed to net.Server or
// net.Socket, which do not care where it was made.
//
// Deliveries are transparent (IP_TRANSPARENT, bound to the client's address) so
// the application sees who connected, and carry the mesh's mark (SO_MARK) so
// the pod's own capture rules let them through and route the replies back to
// this socket (in-pod-rules.ts).

import net from 'node:net';
import koffi from 'koffi';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { PeerError } from '../core/errors.ts';
import { inNetns } from './netns.ts';
import { CONNECT_TIMEOUT_MS } from './tcp-connect.ts';

/** Marks the proxy's own packets inside a pod (0x539, as Istio's in-pod mode), under the mask 0xfff. */
export const MESH_MARK = 0x539;
export const MESH_MARK_MASK = 0xfff;

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_REUSEPORT = 15;
const SO_MARK = 36;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const LISTEN_BACKLOG = 511;

const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int, int, int)');
const setsockopt = libc.func('int setsockopt(int, int, int, const void *optval, uint32_t optlen)');
const bind = libc.func('int bind(int, const void *addr, uint32_t len)');
const listen = libc.func('int listen(int, int)');
const close = libc.func('int close(int)');
const getsockname = libc.func('int getsockname(int, _Out_ uint8_t *addr, _Inout_ uint32_t *len)');

function sockaddrIn(ip: string, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  ip.split('.').forEach((octet, i) => (b[4 + i] = Number(octet)));
  return b;
}

function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  return b;
}

/** Makes a TCP socket, configures it with `steps`, and closes it again if a step fails. */
function makeSocket(what: string, steps: (fd: number, check: (result: number, call: string) => void) => void): number {
  const fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new NodemeshError(ErrorCode.POD_SOCKET, `${what}: socket() failed (errno ${koffi.errno()})`);
  try {
    steps(fd, (result, call) => {
      if (result !== 0) throw new NodemeshError(ErrorCode.POD_SOCKET, `${what}: ${call} failed (errno ${koffi.errno()})`);
    });
    return fd;
  } catch (err) {
    close(fd);
    throw err;
  }
}

/**
 * A listening socket on `0.0.0.0:port` inside the namespace at `netnsPath`, with
 * SO_REUSEPORT so a second daemon can serve the same port during an upgrade.
 */
export function listenInNetns(netnsPath: string, port: number, what: string): number {
  return inNetns(netnsPath, () => makeSocket(`${what} in ${netnsPath}`, (fd, check) => {
    check(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, int32(1), 4), 'SO_REUSEADDR');
    check(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, int32(1), 4), 'SO_REUSEPORT');
    check(bind(fd, sockaddrIn('0.0.0.0', port), 16), `bind to port ${port} (is another program listening on it in the pod?)`);
    check(listen(fd, LISTEN_BACKLOG), 'listen');
  }));
}

function boundPort(fd: number): number {
  const addr = Buffer.alloc(16);
  return getsockname(fd, addr, [16]) === 0 ? addr.readUInt16BE(2) : -1;
}

export interface DeliveryOptions {
  /**
   * The client's own port, when the client's connection reached this pod's
   * namespace (plaintext): the same 4-tuple would join that connection's
   * conntrack entry, and its redirect, instead of reaching the application.
   */
  avoidPort?: number;
  timeoutMs?: number;
}

/**
 * Connects to `ip:port` from inside the namespace at `netnsPath`, as `sourceIp`
 * (transparently) and marked as the mesh's: the application sees the client's
 * own address.
 */
export function connectInNetns(netnsPath: string, ip: string, port: number, sourceIp: string, opts: DeliveryOptions = {}): Promise<net.Socket> {
  const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const what = `delivery to ${ip}:${port} in ${netnsPath}`;
  const transparentSocket = () => makeSocket(what, (s, check) => {
    check(setsockopt(s, SOL_IP, IP_TRANSPARENT, int32(1), 4), 'IP_TRANSPARENT (needs CAP_NET_ADMIN)');
    check(setsockopt(s, SOL_SOCKET, SO_MARK, int32(MESH_MARK), 4), 'SO_MARK (needs CAP_NET_ADMIN)');
    check(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, int32(1), 4), 'TCP_NODELAY');
    check(bind(s, sockaddrIn(sourceIp, 0), 16), `bind to the client's address ${sourceIp}`);
  });
  let fd: number;
  try {
    fd = inNetns(netnsPath, () => {
      const first = transparentSocket();
      if (opts.avoidPort === undefined || boundPort(first) !== opts.avoidPort) return first;
      // The kernel picked the client's own port: take another before releasing this one.
      const second = transparentSocket();
      close(first);
      return second;
    });
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    // connect() reuses the handle that wraps the fd; its bind survives. (Opening the
    // fd read- or write-only ends that side of the stream for good.)
    const s = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    const fail = (err: Error) => {
      s.destroy();
      reject(err);
    };
    s.setTimeout(timeoutMs, () => fail(new PeerError(`connect to ${ip}:${port} timed out after ${timeoutMs} ms: is the workload listening?`)));
    s.once('error', fail);
    s.connect(port, ip, () => {
      s.setTimeout(0);
      s.off('error', fail);
      resolve(s);
    });
  });
}
