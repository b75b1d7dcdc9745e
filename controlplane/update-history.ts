// The most recent deltas, so a node that reconnects can resume from its
// (epoch, version) instead of downloading a full snapshot.

import type { ConfigUpdate } from '../core/types.ts';

export class UpdateHistory {
  readonly #limit: number;
  readonly #deltas: ConfigUpdate[] = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  push(delta: ConfigUpdate): void {
    this.#deltas.push(delta);
    if (this.#deltas.length > this.#limit) this.#deltas.splice(0, this.#deltas.length - this.#limit);
  }

  /**
   * The deltas after `version` up to `current`, or null when they are no longer
   * (or never were) all held: the node then needs a snapshot.
   */
  since(version: number, current: number): ConfigUpdate[] | null {
    if (version === current) return [];
    if (version > current) return null;
    const first = this.#deltas.findIndex((d) => d.version > version);
    if (first < 0 || this.#deltas[first]!.version !== version + 1) return null;
    return this.#deltas.slice(first);
  }
}
