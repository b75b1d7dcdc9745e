// A retry budget, as Linkerd's: retries may add at most `ratio` of the requests
// seen in the last `windowMs`, plus `minPerSecond` so low-traffic clients can
// still retry. It keeps retries from multiplying load on a failing backend.

export interface RetryBudgetOptions {
  ratio?: number;
  minPerSecond?: number;
  windowMs?: number;
}

export class RetryBudget {
  readonly #ratio: number;
  readonly #minPerSecond: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #requests: number[] = [];
  #retries: number[] = [];

  constructor(opts: RetryBudgetOptions = {}, now: () => number = () => performance.now()) {
    this.#ratio = opts.ratio ?? 0.2;
    this.#minPerSecond = opts.minPerSecond ?? 10;
    this.#windowMs = opts.windowMs ?? 10_000;
    this.#now = now;
  }

  /** Records an original request (not a retry). */
  request(): void {
    this.#requests.push(this.#now());
  }

  /** Takes one retry from the budget; false when it is spent. */
  tryRetry(): boolean {
    const now = this.#now();
    const since = now - this.#windowMs;
    this.#requests = this.#requests.filter((t) => t > since);
    this.#retries = this.#retries.filter((t) => t > since);
    const allowed = this.#ratio * this.#requests.length + this.#minPerSecond * (this.#windowMs / 1000);
    if (this.#retries.length >= allowed) return false;
    this.#retries.push(now);
    return true;
  }
}
