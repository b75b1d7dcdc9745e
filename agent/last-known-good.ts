// The last-known-good config on disk, so a node restarted while the control plane
// is down still knows the mesh. Writes are coalesced and asynchronous, and the
// file is JSON lines (a header, then one resource per line) written a batch at a
// time: at 10,000 pods one JSON document was a ~10 MiB string plus its encoded
// copy per write, and stringifying it held the event loop that also carries the
// data plane for tens of milliseconds.

import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ConfigStore, ConfigSnapshot } from '../daemon/config-store.ts';
import type { Resource } from '../core/types.ts';
import { logger } from '../core/log.ts';

const log = logger('config');

/** Resources per write: small enough that each batch is a short slice of the event loop. */
const BATCH = 256;

interface Header {
  epoch: string;
  version: number;
  resources: number;
}

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
        await pipeline(Readable.from(lines(this.#store.snapshot())), createWriteStream(tmp));
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

function* lines(snap: ConfigSnapshot): Generator<string> {
  const header: Header = { epoch: snap.epoch, version: snap.version, resources: snap.resources.length };
  yield `${JSON.stringify(header)}\n`;
  for (let i = 0; i < snap.resources.length; i += BATCH) {
    let batch = '';
    for (const r of snap.resources.slice(i, i + BATCH)) batch += `${JSON.stringify(r)}\n`;
    yield batch;
  }
}

/**
 * Reads a file written by LastKnownGood. Undefined when there is none, or when
 * it is unreadable or incomplete (logged): a partial mesh could lack the policy
 * that denies a connection, so a damaged file counts as no file.
 */
export function readLastKnownGood(path: string): ConfigSnapshot | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('ignoring unreadable last-known-good config', { path, error: String(err) });
    return undefined;
  }
  const rows = text.split('\n');
  if (rows.at(-1) === '') rows.pop();
  try {
    const header = JSON.parse(rows[0] ?? '') as Header;
    if (typeof header.epoch !== 'string' || typeof header.version !== 'number') throw new Error('line 1: not a header (epoch, version)');
    if (header.resources !== rows.length - 1) throw new Error(`header promises ${header.resources} resources, the file has ${rows.length - 1}`);
    const resources = rows.slice(1).map((row, i) => {
      try {
        return JSON.parse(row) as Resource;
      } catch (err) {
        throw new Error(`line ${i + 2}: ${(err as Error).message}`);
      }
    });
    return { epoch: header.epoch, version: header.version, resources };
  } catch (err) {
    log.warn('ignoring unreadable last-known-good config', { path, error: (err as Error).message });
    return undefined;
  }
}
