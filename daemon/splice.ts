// Joins two duplex streams both ways: backpressure through pipe(), a half-close
// on one side becomes an end() on the other, and an error or abort on either
// destroys both, so no half of a proxied connection outlives the other by accident.

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
  a.once('close', onClose(a, b));
  b.once('close', onClose(b, a));
  a.pipe(b);
  b.pipe(a);
}
