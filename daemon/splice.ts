// Joins two duplex streams both ways: backpressure (a full writer pauses its
// reader until it drains), a half-close on one side becomes an end() on the
// other, and an error or abort on either destroys both, so no half of a proxied
// connection outlives the other by accident.
//
// Written out instead of two pipe() calls: a pipe registers nine listeners per
// direction, and a node holding thousands of tunnelled connections pays for each
// of them on every connection.
//
// A writer's own mark (16 KiB) makes a bulk transfer stop and go at every chunk:
// read 64 KiB, pause, wait until the HTTP/2 stream or socket has flushed it, read
// again. A relay that fills its writer past that mark may keep reading until
// RELAY_BUFFER is queued (single-stream bulk +30% in A/B runs), but only
// MAX_DEEP_RELAYS relays at a time, so the node buffers at most 64 MiB more
// however many connections are slow.

import type { Duplex } from 'node:stream';

export const RELAY_BUFFER = 1 << 20;
export const MAX_DEEP_RELAYS = 64;
let deepRelays = 0;

export function splice(a: Duplex, b: Duplex, onClosed: (error?: Error) => void): void {
  let firstError: Error | undefined;
  let closed = 0;
  const fail = (err: Error) => {
    firstError ??= err;
    a.destroy();
    b.destroy();
  };
  const onClose = (side: Duplex, other: Duplex) => () => {
    // A side that closed before both of its directions completed was aborted.
    if (!(side.readableEnded && side.writableFinished)) other.destroy();
    if (++closed === 2) {
      releaseAtoB();
      releaseBtoA();
      onClosed(firstError);
    }
  };
  a.on('error', fail);
  b.on('error', fail);
  // 'close' is emitted once; on() spares the wrapper that once() allocates.
  a.on('close', onClose(a, b));
  b.on('close', onClose(b, a));
  const releaseAtoB = relay(a, b);
  const releaseBtoA = relay(b, a);
}

/** Relays one direction; returns what to call when the connection is gone. */
function relay(from: Duplex, to: Duplex): () => void {
  let deep = false;
  const release = () => {
    if (!deep) return;
    deep = false;
    deepRelays--;
  };
  from.on('data', (chunk: Buffer) => {
    if (to.write(chunk)) return;
    if (!deep && deepRelays < MAX_DEEP_RELAYS) {
      deep = true;
      deepRelays++;
    }
    // write() returned false, so 'drain' follows once the writer has emptied.
    if (!deep || to.writableLength > RELAY_BUFFER) from.pause();
  });
  to.on('drain', () => {
    release();
    from.resume();
  });
  // The reader may have ended already, while the tunnel was being opened.
  if (from.readableEnded) to.end();
  else from.on('end', () => to.end());
  // A reader paused earlier (protocol detection, a tunnel being opened) stays
  // paused when a 'data' listener is added; pipe() resumes it, and so do we.
  from.resume();
  return release;
}

/** Relays currently allowed past their writer's own mark; back to zero once their connections are gone. */
export function deepRelayCount(): number {
  return deepRelays;
}
