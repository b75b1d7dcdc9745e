// File mode: every *.yaml / *.yml in a directory (multi-document) is the
// cluster's state. The directory is watched; a changed file is read again after
// a short debounce and its objects are diffed against the previous read, so an
// edit reaches the nodes well within a second. Editors that save by writing a
// temporary file and renaming it over the original are seen as a rename of the
// original's name, which is handled the same way.

import { watch, readdirSync, readFileSync, statSync, type FSWatcher } from 'node:fs';
import { join, extname } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';
import type { ConfigSource, KubeObject, SourceEvents } from './source.ts';

const log = logger('file-source');
// Long enough to see an editor's write-then-rename as one change, short enough
// not to dominate how fast an edit reaches the nodes.
const DEBOUNCE_MS = 25;
const EXTENSIONS = new Set(['.yaml', '.yml']);

/** "group/Kind/namespace/name": identifies an object across files. */
type ObjectKey = string;

export class FileSource implements ConfigSource {
  readonly dir: string;
  #events: SourceEvents | undefined;
  #watcher: FSWatcher | undefined;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** The objects each file held at its last read. */
  readonly #files = new Map<string, Map<ObjectKey, KubeObject>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  async start(events: SourceEvents): Promise<void> {
    try {
      if (!statSync(this.dir).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new NodemeshError(ErrorCode.BAD_SOURCE, `--source ${this.dir}: cannot read the config directory: ${(err as Error).message}`, { cause: err });
    }
    this.#events = events;
    // Watch before the first read, so an edit made during it is not missed.
    this.#watcher = watch(this.dir, (_event, filename) => {
      if (filename === null) this.#rescan();
      else if (EXTENSIONS.has(extname(filename))) this.#schedule(filename);
    });
    this.#watcher.on('error', (err) => log.error('watching the config directory failed; edits are no longer applied', { dir: this.dir, error: err.message }));
    for (const name of this.#yamlFiles()) this.#read(name);
    log.info('config directory loaded', { dir: this.dir, files: this.#files.size });
    events.synced();
  }

  async stop(): Promise<void> {
    this.#watcher?.close();
    this.#watcher = undefined;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    this.#events = undefined;
  }

  #yamlFiles(): string[] {
    return readdirSync(this.dir).filter((n) => EXTENSIONS.has(extname(n)) && !n.startsWith('.')).sort();
  }

  #schedule(name: string): void {
    if (name.startsWith('.')) return;
    clearTimeout(this.#timers.get(name));
    this.#timers.set(name, setTimeout(() => {
      this.#timers.delete(name);
      this.#read(name);
    }, DEBOUNCE_MS));
  }

  /** A watch event without a file name: read every file again, and forget vanished ones. */
  #rescan(): void {
    const present = new Set(this.#yamlFiles());
    for (const name of new Set([...present, ...this.#files.keys()])) this.#schedule(name);
  }

  /** Reads one file and reports what changed since its last read, all in one tick. */
  #read(name: string): void {
    const events = this.#events;
    if (!events) return;
    const origin = join(this.dir, name);
    let text: string | null;
    try {
      text = readFileSync(origin, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        events.invalid(origin, 'file', new Error(`cannot read: ${(err as Error).message}`));
        return;
      }
      text = null;
    }
    const previous = this.#files.get(name) ?? new Map<ObjectKey, KubeObject>();
    const current = text === null ? new Map<ObjectKey, KubeObject>() : this.#parse(text, origin, events);
    if (text === null) this.#files.delete(name);
    else this.#files.set(name, current);

    for (const [key, obj] of previous) {
      if (current.has(key)) continue;
      const elsewhere = this.#definedElsewhere(key, name);
      if (elsewhere) events.upsert(elsewhere.obj, join(this.dir, elsewhere.file));
      else events.remove(obj.kind, obj.metadata.namespace ?? '', obj.metadata.name);
    }
    for (const obj of current.values()) events.upsert(obj, origin);
    log.debug('config file read', { file: origin, objects: current.size, removed: text === null });
  }

  #parse(text: string, origin: string, events: SourceEvents): Map<ObjectKey, KubeObject> {
    const objects = new Map<ObjectKey, KubeObject>();
    parseAllDocuments(text).forEach((doc, i) => {
      const object = `doc #${i + 1}`;
      if (doc.errors.length) {
        events.invalid(origin, object, new Error(`not valid YAML: ${doc.errors[0]!.message}`));
        return;
      }
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) return;
      const problem = shapeProblem(value);
      if (problem) {
        events.invalid(origin, object, new Error(problem));
        return;
      }
      const obj = value as KubeObject;
      const key = objectKey(obj);
      if (objects.has(key)) log.warn('object defined twice in one file; the later one wins', { file: origin, object: `${obj.kind} ${obj.metadata.name}` });
      objects.set(key, obj);
    });
    return objects;
  }

  #definedElsewhere(key: ObjectKey, except: string): { file: string; obj: KubeObject } | undefined {
    for (const [file, objects] of this.#files) {
      const obj = file === except ? undefined : objects.get(key);
      if (obj) return { file, obj };
    }
    return undefined;
  }
}

function shapeProblem(value: unknown): string | null {
  if (typeof value !== 'object' || Array.isArray(value)) return 'not a Kubernetes object (expected a mapping with apiVersion, kind and metadata.name)';
  const v = value as Record<string, unknown>;
  if (typeof v.kind !== 'string' || !v.kind) return 'kind: required';
  if (typeof v.apiVersion !== 'string' || !v.apiVersion) return 'apiVersion: required';
  const meta = v.metadata as Record<string, unknown> | undefined;
  if (typeof meta !== 'object' || meta === null || typeof meta.name !== 'string' || !meta.name) return 'metadata.name: required';
  if (meta.namespace !== undefined && typeof meta.namespace !== 'string') return 'metadata.namespace: must be a string';
  return null;
}

function objectKey(obj: KubeObject): ObjectKey {
  const group = obj.apiVersion.includes('/') ? obj.apiVersion.slice(0, obj.apiVersion.indexOf('/')) : '';
  return `${group}/${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
