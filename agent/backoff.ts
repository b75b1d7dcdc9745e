// Exponential backoff with full jitter, shared by the control-plane stream and
// certificate retries: many nodes reconnecting after a control-plane restart must
// not arrive in lockstep.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  #attempt = 0;

  constructor(opts: BackoffOptions) {
    this.#initialMs = opts.initialMs;
    this.#maxMs = opts.maxMs;
  }

  /** Delay before the next attempt: grows ×2 up to the cap, jittered within [50%, 100%]. */
  next(): number {
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
