// Readiness as named start-up tasks ("config synced", "certificates issued",
// "listeners bound"): the node is ready once every registered task is done, and
// /healthz/ready can say exactly which ones are still pending.

export class Readiness {
  readonly #pending = new Set<string>();

  /** Registers a pending task; the returned function marks it done (idempotent). */
  register(name: string): () => void {
    this.#pending.add(name);
    return () => {
      this.#pending.delete(name);
    };
  }

  pending(): string[] {
    return [...this.#pending];
  }

  ready(): boolean {
    return this.#pending.size === 0;
  }
}
