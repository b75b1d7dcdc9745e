// Entering a pod's network namespace from the node process, for what must
// happen inside it: creating the sockets of the proxy's listeners for that pod,
// the transparent connections that deliver to the pod's application, reading
// its addresses, and starting iptables-restore or ip there. setns(2) moves only
// the calling thread; Node runs JavaScript on one thread, so a synchronous
// section between setns into the pod and setns back runs entirely inside it and
// nothing else interleaves. A socket keeps the namespace it was created in, and
// a child process the namespace of the thread that forked it.
//
// setns into a network namespace needs CAP_SYS_ADMIN (in the user namespace that
// owns it); IP_TRANSPARENT and SO_MARK need CAP_NET_ADMIN.

import { closeSync, openSync, readdirSync, statSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { ErrorCode, NodemeshError } from '../core/errors.ts';

const CLONE_NEWNET = 0x40000000;
const libc = koffi.load('libc.so.6');
const setns = libc.func('int setns(int fd, int nstype)');

/** Where containerd, CRI-O and `ip netns` keep named network namespaces. */
export const NETNS_DIR = '/var/run/netns';

let home: number | undefined;

/** The node's own namespace, opened once: the one every section returns to. */
function homeNamespace(): number {
  home ??= openSync('/proc/thread-self/ns/net', 'r');
  return home;
}

/** Runs `fn` synchronously inside the network namespace at `path` (a bind-mounted netns file). */
export function inNetns<T>(path: string, fn: () => T): T {
  const back = homeNamespace();
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new NodemeshError(ErrorCode.NETNS, `cannot open network namespace ${path}: ${(err as Error).message}; check that the node's ${NETNS_DIR} is mounted into the node agent`);
  }
  try {
    if (setns(fd, CLONE_NEWNET) !== 0) {
      throw new NodemeshError(ErrorCode.NETNS, `setns into ${path} failed (errno ${koffi.errno()}): the node agent needs CAP_SYS_ADMIN to enter pod network namespaces`);
    }
    try {
      return fn();
    } finally {
      // Failing to come back would leave the whole process in the pod: stop rather than serve from there.
      if (setns(back, CLONE_NEWNET) !== 0) {
        process.stderr.write(`nodemesh: cannot return to the node's network namespace from ${path} (errno ${koffi.errno()}); exiting\n`);
        process.exit(70);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** The IPv4 addresses of a namespace's interfaces other than loopback. */
export function ipv4AddressesIn(path: string): string[] {
  return inNetns(path, () => Object.values(networkInterfaces()).flat()
    .filter((a) => a !== undefined && a.family === 'IPv4' && !a.internal)
    .map((a) => a!.address));
}

/** A named network namespace: its path and the inode that identifies it (a recreated name is a new namespace). */
export interface NamedNetns {
  path: string;
  inode: number;
}

/** The network namespaces under `dir` whose names start with `prefix`. */
export function listNetns(dir = NETNS_DIR, prefix = ''): NamedNetns[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const found: NamedNetns[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const path = join(dir, name);
    try {
      found.push({ path, inode: statSync(path).ino });
    } catch {
      // Removed while we listed it.
    }
  }
  return found;
}
