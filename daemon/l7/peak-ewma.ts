// Per-request endpoint choice for HTTP, as Linkerd does it: power of two random
// choices, scoring each endpoint by its peak-EWMA latency times its outstanding
// requests plus one. A latency sample above the average replaces it at once (the
// "peak"), lower ones decay it with a 10 s time constant, so a slowing endpoint
// is avoided immediately and a recovered one is trusted again gradually.

import type { Endpoint } from '../../core/types.ts';
import { chooseOfTwo } from '../two-choices.ts';

const DECAY_MS = 10_000;
/** The latency assumed for an endpoint never measured: cheap enough to be tried. */
const DEFAULT_RTT_MS = 1;
/** What a failed attempt (refused, reset) counts as, so the next choices avoid that endpoint. */
const FAILURE_PENALTY_MS = 1_000;
/** Endpoints not used for this long are forgotten. */
const FORGET_MS = 5 * 60_000;

interface Stats {
  ewmaMs: number;
  updatedAt: number;
  pending: number;
}

export class PeakEwmaBalancer {
  readonly #stats = new Map<string, Stats>();
  readonly #random: () => number;
  readonly #now: () => number;

  constructor(random: () => number = Math.random, now: () => number = () => performance.now()) {
    this.#random = random;
    this.#now = now;
  }

  /** A ready endpoint, or undefined when none is ready. */
  choose(endpoints: readonly Endpoint[]): Endpoint | undefined {
    return chooseOfTwo(endpoints, this.#random, (ip) => this.cost(ip));
  }

  /** The load score of an endpoint: decayed latency times (outstanding requests + 1). */
  cost(ip: string): number {
    const s = this.#stats.get(ip);
    if (!s) return DEFAULT_RTT_MS;
    return this.#decayed(s, this.#now()) * (s.pending + 1);
  }

  /** Marks a request to `ip` as started; call the result when its response has arrived, or it failed. */
  start(ip: string): (failed?: boolean) => void {
    const now = this.#now();
    this.#forgetIdle(now);
    const s = this.#stats.get(ip) ?? { ewmaMs: DEFAULT_RTT_MS, updatedAt: now, pending: 0 };
    this.#stats.set(ip, s);
    s.pending++;
    let done = false;
    return (failed = false) => {
      if (done) return;
      done = true;
      s.pending--;
      const elapsed = this.#now() - now;
      this.#observe(s, failed ? Math.max(elapsed, FAILURE_PENALTY_MS) : elapsed);
    };
  }

  #observe(s: Stats, rttMs: number): void {
    const now = this.#now();
    const current = this.#decayed(s, now);
    if (rttMs > current) {
      s.ewmaMs = rttMs;
    } else {
      const w = Math.exp(-Math.max(0, now - s.updatedAt) / DECAY_MS);
      s.ewmaMs = current * w + rttMs * (1 - w);
    }
    s.updatedAt = now;
  }

  #decayed(s: Stats, now: number): number {
    // Idle time decays the estimate towards zero, so an endpoint that was slow long ago is retried.
    const elapsed = Math.max(0, now - s.updatedAt);
    return s.pending > 0 ? s.ewmaMs : s.ewmaMs * Math.exp(-elapsed / DECAY_MS);
  }

  #forgetIdle(now: number): void {
    for (const [ip, s] of this.#stats) if (s.pending === 0 && now - s.updatedAt > FORGET_MS) this.#stats.delete(ip);
  }
}
