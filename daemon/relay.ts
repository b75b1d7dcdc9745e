// Connect, track, splice: how every L4 path ends once it has decided where a
// connection goes. The upstream (a TCP connection to a pod, or an HBONE stream)
// is opened; if the client left meanwhile it is closed again; otherwise the
// caller tracks the pair (metrics, access log, /connections), the bytes already
// read from the client (protocol detection) go first, and the two are spliced.
// `settled` runs exactly once whichever way it ends, so a balancer's in-flight
// count is released on a failed connect, an abandoned one and a closed one alike.

import type { Duplex } from 'node:stream';
import { splice } from './splice.ts';

export interface RelayPlan<U extends Duplex> {
  /** The accepted side: a captured socket or an HBONE stream. */
  client: Duplex;
  /** Opens the upstream side. */
  connect(): Promise<U>;
  /** Bytes read from the client before the relay (protocol detection); sent upstream first. */
  head?: Buffer;
  /** The upstream is open and the client still there: track it; returns what to call at the close. */
  opened(upstream: U): (error?: Error) => void;
  /** connect() failed: refuse the client in the transport's way. */
  failed(error: Error): void;
  /** Runs once, after failed, after an abandoned connect, or at the close. */
  settled?(): void;
}

export function relay<U extends Duplex>(plan: RelayPlan<U>): void {
  const { client } = plan;
  plan.connect().then(
    (upstream) => {
      if (client.destroyed || client.closed) {
        upstream.destroy();
        plan.settled?.();
        return;
      }
      const finish = plan.opened(upstream);
      if (plan.head?.length) upstream.write(plan.head);
      splice(client, upstream, (err) => {
        finish(err);
        plan.settled?.();
      });
    },
    (err: Error) => {
      plan.failed(err);
      plan.settled?.();
    },
  );
}
