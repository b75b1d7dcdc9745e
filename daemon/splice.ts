// Joins two duplex streams both ways: backpressure (a full writer pauses its
// reader until it drains), a half-close on one side becomes an end() on the
// other, and an error or abort on either destroys both, so no half of a proxied
// connection outlives the other by accident.
//
// Written out instead of two pipe() calls: a pipe registers nine listeners per
// direction, and a node holding thousands of tunnelled connections pays for each
// of them on every connection.

import type { Duplex } from 'node:stream';

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
    if (++closed === 2) onClosed(firstError);
  };
  a.on('error', fail);
  b.on('error', fail);
  // 'close' is emitted once; on() spares the wrapper that once() allocates.
  a.on('close', onClose(a, b));
  b.on('close', onClose(b, a));
  relay(a, b);
  relay(b, a);
}

function relay(from: Duplex, to: Duplex): void {
  from.on('data', (chunk: Buffer) => {
    // `to` closed (a pod that ended its connection, which ends ours to it): a write
    // would drop the data unseen and the sender would wait for an answer for
    // ever. TCP answers data for a closed socket with a reset; so does the splice.
    if (to.destroyed) return void reset(from);
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  // The reader may have ended already, while the tunnel was being opened.
  if (from.readableEnded) to.end();
  else from.on('end', () => to.end());
  // A reader paused earlier (protocol detection, a tunnel being opened) stays
  // paused when a 'data' listener is added; pipe() resumes it, and so do we.
  from.resume();
}

/** Closes a stream so its peer learns of the failure: a TCP reset for a socket; an HBONE stream's destroy is a reset already (RST_STREAM). */
function reset(stream: Duplex): void {
  const socket = stream as Duplex & { resetAndDestroy?: () => void };
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  else stream.destroy();
}
