// Handing the node's listeners over to the daemon that replaces this one. Every
// listener is bound with SO_REUSEPORT (on the node and inside each captured
// pod), so during a rolling update the new daemon binds beside the old one and
// the kernel spreads new connections over both. The old daemon stops accepting
// only once another socket listens on each of its ports, in each namespace:
// closing the last listener of a port would refuse every new connection to it.
// With net.ipv4.tcp_migrate_req set, connections already queued on the closed
// listener move to the remaining one instead of being reset.
//
// Who else listens is read from /proc/thread-self/net/tcp (inside a pod's
// namespace for its listeners): LISTEN sockets on the port whose inode is not
// one of ours.

import { fstatSync, readFileSync, writeFileSync } from 'node:fs';
import { logger } from '../core/log.ts';
import { inNetns } from './netns.ts';

const log = logger('daemon');
/** How long a draining daemon waits at most for its successor's listeners (a rolling update's new daemon is ready by then). */
export const SUCCESSOR_WAIT_MS = 5000;
const TCP_LISTEN = '0A';
const POLL_MS = 50;

/** One listening socket of ours: its port, its fd and the namespace it lives in (undefined: the node's). */
export interface HeldListener {
  port: number;
  fd: number;
  netns?: string;
}

/** The IPv4 sockets listening in the calling thread's namespace: inodes by port. */
function listeningInodes(): Map<number, Set<number>> {
  const byPort = new Map<number, Set<number>>();
  for (const line of readFileSync('/proc/thread-self/net/tcp', 'latin1').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== TCP_LISTEN) continue;
    const port = parseInt(f[1]!.split(':')[1]!, 16);
    let inodes = byPort.get(port);
    if (!inodes) byPort.set(port, (inodes = new Set()));
    inodes.add(Number(f[9]));
  }
  return byPort;
}

/**
 * Resolves true once another daemon listens beside every one of `held`, false
 * when `timeoutMs` passes first (then we are the only one: stop at once). Each
 * poll reads a namespace's table once for all its listeners (a pod has three),
 * and only namespaces still waiting: with a hundred pods, a listener at a time
 * read 6,000 tables a second and cost the draining daemon ~20% of a core while
 * its successor started beside it.
 */
export async function waitForSuccessor(held: readonly HeldListener[], timeoutMs: number): Promise<boolean> {
  const ours = new Set<number>();
  for (const h of held) {
    try {
      ours.add(fstatSync(h.fd).ino);
    } catch {
      // Already closed.
    }
  }
  const deadline = Date.now() + timeoutMs;
  // undefined: the node's own namespace.
  let pending = new Map<string | undefined, HeldListener[]>();
  for (const h of held) {
    const group = pending.get(h.netns);
    if (group) group.push(h);
    else pending.set(h.netns, [h]);
  }
  for (;;) {
    const still = new Map<string | undefined, HeldListener[]>();
    for (const [netns, listeners] of pending) {
      let byPort: Map<number, Set<number>>;
      try {
        byPort = netns ? inNetns(netns, listeningInodes) : listeningInodes();
      } catch (err) {
        // A pod namespace that is gone needs no successor.
        log.debug('cannot check listeners for a successor', { netns, error: (err as Error).message });
        continue;
      }
      const waiting = listeners.filter((h) => ![...(byPort.get(h.port) ?? [])].some((inode) => !ours.has(inode)));
      if (waiting.length) still.set(netns, waiting);
    }
    pending = still;
    if (pending.size === 0) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Waits for a successor beside every listener of `held` (at most `waitMs`) and says what it found; then the caller stops accepting. */
export async function handOver(held: readonly HeldListener[], waitMs: number): Promise<boolean> {
  const started = Date.now();
  const handedOver = await waitForSuccessor(held, waitMs);
  log.info(handedOver ? 'another daemon serves every listener: stopping accepting' : 'no other daemon serves these listeners: stopping accepting', {
    listeners: held.length, waitedMs: Date.now() - started,
  });
  return handedOver;
}

/**
 * Asks the kernel to move connections queued on a closed listener to another
 * of its SO_REUSEPORT group (per namespace; needs /proc/sys writable, as it is
 * in the node agent's pod only when the runtime allows it). Best effort.
 */
export function enableRequestMigration(netns?: string): void {
  const write = () => writeFileSync('/proc/sys/net/ipv4/tcp_migrate_req', '1');
  try {
    if (netns) inNetns(netns, write);
    else write();
  } catch (err) {
    log.debug('net.ipv4.tcp_migrate_req not set: queued connections of a closed listener are reset, not moved', { netns, error: (err as Error).message });
  }
}
