// Endpoint choice for Service traffic: power of two random choices over the
// ready endpoints, picking the one with fewer active connections from this node.
// Connection counts are kept per endpoint IP for the life of each connection.

import type { Endpoint } from '../core/types.ts';
import { chooseOfTwo } from './two-choices.ts';

export class LoadBalancer {
  readonly #active = new Map<string, number>();
  readonly #random: () => number;

  /** `random` returns [0, 1); injectable so tests can make choices deterministic. */
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** A ready endpoint among `endpoints`, or undefined when none is ready. */
  choose(endpoints: readonly Endpoint[]): Endpoint | undefined {
    return chooseOfTwo(endpoints, this.#random, (ip) => this.active(ip));
  }

  /** Counts a connection to `ip` as active; the returned release is idempotent. */
  track(ip: string): () => void {
    this.#active.set(ip, this.active(ip) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.active(ip) - 1;
      if (n > 0) this.#active.set(ip, n);
      else this.#active.delete(ip);
    };
  }

  active(ip: string): number {
    return this.#active.get(ip) ?? 0;
  }
}
