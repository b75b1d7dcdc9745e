// The last-known-good config on disk, so a node restarted while the control plane
// is down still knows the mesh. Writes are coalesced and asynchronous: with 10,000
// pods a snapshot is megabytes of JSON, and writing it synchronously on every delta
// would stall the event loop that also carries the data plane.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ConfigStore } from './config-store.ts';
import { logger } from '../core/log.ts';

const log = logger('config');

export class LastKnownGood {
  readonly #store: ConfigStore;
  readonly #path: string;
  readonly #delayMs: number;
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #dirty = false;

  constructor(store: ConfigStore, path: string, delayMs = 250) {
    this.#store = store;
    this.#path = path;
    this.#delayMs = delayMs;
  }

  /** Writes the store's current config soon; many calls in a burst cost one write. */
  schedule(): void {
    this.#dirty = true;
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#write();
    }, this.#delayMs);
    this.#timer.unref();
  }

  /** Writes now if anything is pending, and resolves when it is on disk. */
  async flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#write();
  }

  #write(): Promise<void> {
    this.#writing = this.#writing.then(async () => {
      if (!this.#dirty) return;
      this.#dirty = false;
      const tmp = `${this.#path}.tmp`;
      try {
        await mkdir(dirname(this.#path), { recursive: true });
        await writeFile(tmp, JSON.stringify(this.#store.snapshot()));
        await rename(tmp, this.#path);
      } catch (err) {
        log.error('cannot persist the last-known-good config; a restart while the control plane is down would start empty', {
          path: this.#path, error: (err as Error).message,
        });
      }
    });
    return this.#writing;
  }
}
