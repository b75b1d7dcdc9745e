// Keeps one kind in step with the API server: list, then watch from the list's
// resourceVersion. A watch that ends is resumed from the last resourceVersion seen;
// 410 Gone (history compacted) forces a relist, whose differences are delivered as
// upserts and removals. Errors back off exponentially with full jitter, so a
// restarted API server is not hit by every replica at the same instant.

import { setTimeout as sleep } from 'node:timers/promises';
import { Watch } from '@kubernetes/client-node';
import type { KubeObject, SourceEvents } from './source.ts';
import type { KubeApi } from './kubernetes-api.ts';
import type { WatchedKind } from './kubernetes-kinds.ts';
import { isStatus } from './kubernetes-api.ts';
import { InvalidObjectError } from '../core/errors.ts';
import { logger } from '../core/log.ts';

const log = logger('kubernetes');

const ORIGIN = 'kubernetes';

export interface ReflectorTiming {
  /** First retry delay after an error; doubles per consecutive error up to maxRetryMs. */
  minRetryMs: number;
  maxRetryMs: number;
  /** How often to look again for a CRD kind that is not installed. */
  absentRetryMs: number;
}

export const DEFAULT_TIMING: ReflectorTiming = { minRetryMs: 500, maxRetryMs: 30_000, absentRetryMs: 60_000 };

// A watch shorter than this that ends cleanly counts as a failure, so a server that
// closes every watch at once is not hammered in a tight loop.
const HEALTHY_WATCH_MS = 1_000;

interface ListBody {
  metadata?: { resourceVersion?: string };
  items?: unknown[];
}

type WatchEnd = 'gone' | 'closed';

function retryDelay(timing: ReflectorTiming, failures: number): number {
  const ceiling = Math.min(timing.maxRetryMs, timing.minRetryMs * 2 ** Math.max(0, failures - 1));
  return timing.minRetryMs / 2 + Math.random() * (ceiling - timing.minRetryMs / 2);
}

export class Reflector {
  readonly #api: KubeApi;
  readonly #watch: Watch;
  readonly #kind: WatchedKind;
  readonly #events: SourceEvents;
  readonly #timing: ReflectorTiming;
  readonly #onListed: () => void;
  readonly #stop = new AbortController();
  /** namespace/name -> resourceVersion of every valid object delivered. */
  #known = new Map<string, string>();
  #resourceVersion = '';
  #listedOnce = false;
  #absentLogged = false;
  #running: Promise<void> | undefined;
  #activeWatch: AbortController | undefined;

  constructor(api: KubeApi, kind: WatchedKind, events: SourceEvents, timing: ReflectorTiming, onListed: () => void) {
    this.#api = api;
    this.#watch = new Watch(api.config);
    this.#kind = kind;
    this.#events = events;
    this.#timing = timing;
    this.#onListed = onListed;
  }

  start(): void {
    this.#running = this.#run();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#activeWatch?.abort();
    await this.#running;
  }

  async #run(): Promise<void> {
    let failures = 0;
    let needList = true;
    while (!this.#stop.signal.aborted) {
      try {
        if (needList) {
          if (!(await this.#list())) {
            await this.#pause(this.#timing.absentRetryMs);
            continue;
          }
          needList = false;
          failures = 0;
        }
        const started = Date.now();
        const end = await this.#watchOnce();
        if (end === 'gone') {
          log.info('watch history expired (410 Gone); listing again', { kind: this.#kind.kind, resourceVersion: this.#resourceVersion });
          needList = true;
          continue;
        }
        if (Date.now() - started >= HEALTHY_WATCH_MS) {
          failures = 0;
          continue;
        }
        failures++;
      } catch (err) {
        if (this.#stop.signal.aborted) break;
        failures++;
        // A CRD removed while watched answers 404; the list decides whether it is gone.
        if (isStatus(err, 404) || (err as { statusCode?: number }).statusCode === 404) needList = true;
        log.warn('list/watch failed; retrying', { kind: this.#kind.kind, failures, error: String((err as Error)?.message ?? err) });
      }
      await this.#pause(retryDelay(this.#timing, failures));
    }
  }

  async #pause(ms: number): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.#stop.signal });
    } catch {
      // stopped while waiting
    }
  }

  /** Lists the kind and delivers the differences; false when the kind is not installed. */
  async #list(): Promise<boolean> {
    let body: ListBody;
    try {
      body = await this.#api.get<ListBody>(this.#kind.path, this.#stop.signal);
    } catch (err) {
      if (!(this.#kind.absentMessage && isStatus(err, 404))) throw err;
      if (!this.#absentLogged) log.warn(this.#kind.absentMessage, { kind: this.#kind.kind, path: this.#kind.path });
      this.#absentLogged = true;
      this.#replaceAll([]);
      this.#markListed();
      return false;
    }
    if (this.#absentLogged) log.info(`${this.#kind.kind} CRD found; watching it`, { kind: this.#kind.kind });
    this.#absentLogged = false;
    this.#replaceAll(Array.isArray(body.items) ? body.items : []);
    this.#resourceVersion = body.metadata?.resourceVersion ?? '';
    this.#markListed();
    return true;
  }

  #markListed(): void {
    if (this.#listedOnce) return;
    this.#listedOnce = true;
    this.#onListed();
  }

  #replaceAll(items: unknown[]): void {
    const previous = this.#known;
    this.#known = new Map();
    for (const item of items) {
      const obj = this.#accept(item);
      if (!obj) continue;
      const key = keyOf(obj);
      const rv = obj.metadata.resourceVersion ?? '';
      this.#known.set(key, rv);
      if (previous.get(key) !== rv || rv === '') this.#events.upsert(obj, ORIGIN);
    }
    for (const key of previous.keys()) {
      if (this.#known.has(key)) continue;
      const [namespace, name] = splitKey(key);
      this.#events.remove(this.#kind.kind, namespace, name);
    }
  }

  #watchOnce(): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve, reject) => {
      let gone = false;
      let failure: Error | undefined;
      const handle = (type: string, object: unknown) => {
        if (type === 'ERROR') {
          const status = (object ?? {}) as { code?: number; message?: string };
          if (status.code === 410) gone = true;
          else failure = new Error(`watch ERROR event: ${status.code ?? '?'} ${status.message ?? JSON.stringify(object)}`);
          this.#activeWatch?.abort();
          return;
        }
        const rv = (object as { metadata?: { resourceVersion?: unknown } })?.metadata?.resourceVersion;
        if (typeof rv === 'string' && rv) this.#resourceVersion = rv;
        if (type === 'ADDED' || type === 'MODIFIED') this.#applyUpsert(object);
        else if (type === 'DELETED') this.#applyDelete(object);
      };
      const onEvent = (type: string, object: unknown) => {
        try {
          handle(type, object);
        } catch (err) {
          // Never into the watch's stream: one bad event must not end the others.
          log.error('handling a watch event failed; the event is skipped', { kind: this.#kind.kind, type, error: String((err as Error)?.stack ?? err) });
        }
      };
      // Watch hands out its AbortController only once the server answered; a stop
      // before that must not wait for the request to time out.
      const onStop = () => resolve('closed');
      this.#stop.signal.addEventListener('abort', onStop, { once: true });
      const onDone = (err: unknown) => {
        this.#stop.signal.removeEventListener('abort', onStop);
        this.#activeWatch = undefined;
        const code = (err as { statusCode?: number } | null)?.statusCode;
        if (gone || code === 410) resolve('gone');
        else if (failure) reject(failure);
        else if (!err || (err as Error).name === 'TimeoutError' || this.#stop.signal.aborted) resolve('closed');
        else reject(err);
      };
      const query = { resourceVersion: this.#resourceVersion || undefined, allowWatchBookmarks: true };
      this.#watch.watch(this.#kind.path, query, onEvent, onDone).then((controller) => {
        this.#activeWatch = controller;
        if (this.#stop.signal.aborted) controller.abort();
      }, reject);
    });
  }

  #applyUpsert(raw: unknown): void {
    const obj = this.#accept(raw);
    if (!obj) return;
    this.#known.set(keyOf(obj), obj.metadata.resourceVersion ?? '');
    this.#events.upsert(obj, ORIGIN);
  }

  #applyDelete(raw: unknown): void {
    const obj = this.#accept(raw);
    if (!obj) return;
    const key = keyOf(obj);
    if (!this.#known.delete(key)) return;
    this.#events.remove(this.#kind.kind, obj.metadata.namespace ?? '', obj.metadata.name);
  }

  /** The object with its kind filled in (list items omit it), or undefined after reporting it invalid. */
  #accept(raw: unknown): KubeObject | undefined {
    const meta = (raw as { metadata?: Record<string, unknown> } | null)?.metadata;
    const name = typeof meta?.name === 'string' ? meta.name : '';
    const namespace = typeof meta?.namespace === 'string' ? meta.namespace : '';
    const label = `${this.#kind.kind} ${namespace ? `${namespace}/` : ''}${name || '<no name>'}`;
    let problem: InvalidObjectError | undefined;
    if (typeof raw !== 'object' || raw === null || typeof meta !== 'object' || meta === null) problem = new InvalidObjectError(label, 'metadata', 'missing');
    else if (!name) problem = new InvalidObjectError(label, 'metadata.name', 'missing or not a string');
    else if (this.#kind.namespaced && !namespace) problem = new InvalidObjectError(label, 'metadata.namespace', 'missing on a namespaced kind');
    if (problem) {
      this.#events.invalid(ORIGIN, label, problem);
      return undefined;
    }
    return { ...(raw as KubeObject), apiVersion: this.#kind.apiVersion, kind: this.#kind.kind };
  }
}

function keyOf(obj: KubeObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}
