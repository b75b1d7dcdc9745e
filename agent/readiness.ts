// Readiness as named start-up tasks ("config synced", "certificates issued",
// "listeners bound"): the node is ready once every registered task is done, and
// /healthz/ready can say exactly which ones are still pending.

export class Readiness {
  readonly #pending = new Set<string>();
  readonly #onReady: (() => void)[] = [];

  /** Registers a pending task; the returned function marks it done (idempotent). */
  register(name: string): () => void {
    this.#pending.add(name);
    return () => {
      if (!this.#pending.delete(name) || this.#pending.size) return;
      for (const callback of this.#onReady.splice(0)) callback();
    };
  }

  /** Calls `callback` once, when the last pending task is done. */
  onReady(callback: () => void): void {
    this.#onReady.push(callback);
  }

  pending(): string[] {
    return [...this.#pending];
  }

  ready(): boolean {
    return this.#pending.size === 0;
  }
}
