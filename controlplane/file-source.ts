// File mode: every *.yaml / *.yml in a directory (multi-document) is the
// cluster's state. The directory is watched; a changed file is read again after
// a short debounce and its objects are diffed against the previous read, so an
// edit reaches the nodes well within a second. Editors that save by writing a
// temporary file and renaming it over the original are seen as a rename of the
// original's name, which is handled the same way.
//
// Nothing in the directory can stop the control plane. A file is read only
// within its caps (FILE_LIMITS: bytes, documents, YAML nodes per document,
// nesting, alias expansion); a file over one is refused whole, named, and what
// its last good read held stays in effect while the rest of the directory
// applies. The bytes are checked before the file is in memory, the others while
// the YAML is lexed, a lexeme at a time, so a cap stops the parser before it has
// paid for what is over it (the yaml package costs up to ~1 KiB of memory per
// byte of pathological input: 1 MiB of "[" took 800 MiB). One malformed document
// is refused alone. An object defined in two files comes from the file whose
// path sorts first, whichever was read last; every other copy is listed as
// rejected, naming that file.

import { closeSync, constants, fstatSync, openSync, readSync, watch, readdirSync, statSync, type FSWatcher } from 'node:fs';
import { join, extname } from 'node:path';
import { Composer, Lexer, LineCounter, Parser, isMap, isScalar, isSeq, type Document } from 'yaml';
import { ErrorCode, InvalidObjectError, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';
import type { ConfigSource, KubeObject, SourceEvents } from './source.ts';
import { describeObject, quote } from './fields.ts';

const log = logger('file-source');
// Long enough to see an editor's write-then-rename as one change, short enough
// not to dominate how fast an edit reaches the nodes.
const DEBOUNCE_MS = 25;
const EXTENSIONS = new Set(['.yaml', '.yml']);

/** "group/Kind/namespace/name": identifies an object across files. */
type ObjectKey = string;

export interface FileLimits {
  /** Bytes per file. Kubernetes caps one object at 1.5 MiB; a file of many is split. */
  bytes: number;
  /** YAML documents per file: 1 MiB of "---" lines is 262,144 empty documents, 6 s to compose. */
  documents: number;
  /** YAML nodes per document, as parsed and again as expanded by aliases. */
  nodes: number;
  /** Nesting depth of a document. Kubernetes objects nest some 15 levels. */
  depth: number;
  /** The yaml package's maxAliasCount: how far nested aliases may expand (a "billion laughs"). */
  aliases: number;
}

// Measured on a busy 2-CPU machine: a 1 MiB file of 6,800 minimal Pods took 4 s
// and 50 MiB; a 50,000-node document (far over any real object: a Pod from the
// API server has a few hundred nodes) takes at most about 50 MiB; 10,000 empty
// documents take half a second.
export const FILE_LIMITS: Readonly<FileLimits> = { bytes: 1024 * 1024, documents: 10_000, nodes: 50_000, depth: 64, aliases: 100 };

export interface FileSourceOptions {
  /** Tests lower the caps; the defaults are FILE_LIMITS. */
  limits?: Partial<FileLimits>;
}

/** What one read of a file reports beyond its objects: documents and caps it failed. */
interface Problem {
  object: string;
  error: Error;
}

interface FileState {
  /** The objects of its last good read. */
  objects: Map<ObjectKey, KubeObject>;
  problems: Problem[];
}

/** A file over a cap, or unreadable: refused whole. */
class FileRefused extends Error {}

export class FileSource implements ConfigSource {
  readonly dir: string;
  #events: SourceEvents | undefined;
  #watcher: FSWatcher | undefined;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #limits: FileLimits;
  /** What each file held at its last read. */
  readonly #files = new Map<string, FileState>();
  /** The files holding each object: more than one is a conflict. */
  readonly #holders = new Map<ObjectKey, Set<string>>();
  /** The file whose copy of each object the model has. */
  readonly #owners = new Map<ObjectKey, string>();

  constructor(dir: string, options: FileSourceOptions = {}) {
    this.dir = dir;
    this.#limits = { ...FILE_LIMITS, ...options.limits };
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
    let present: string[];
    try {
      present = this.#yamlFiles();
    } catch (err) {
      // In the watcher's callback: a throw here would end the process.
      log.error('listing the config directory failed; files are read again at its next change', { dir: this.dir, error: (err as Error).message });
      return;
    }
    for (const name of new Set([...present, ...this.#files.keys()])) this.#schedule(name);
  }

  /** Reads one file and reports what changed since its last read, all in one tick. */
  #read(name: string): void {
    const events = this.#events;
    if (!events) return;
    const origin = join(this.dir, name);
    const previous = this.#files.get(name);
    let next: FileState | undefined;
    try {
      const text = readCapped(origin, this.#limits.bytes);
      next = text === null ? undefined : parseFile(text, this.#limits);
    } catch (err) {
      // Refused whole: what its last good read held stays in effect.
      const error = err instanceof FileRefused ? err : new Error(`cannot be parsed: ${String((err as Error)?.message ?? err)}`);
      next = { objects: previous?.objects ?? new Map(), problems: [{ object: 'file', error }] };
    }
    try {
      this.#replace(name, previous, next, events);
    } catch (err) {
      // In a timer's callback: a throw here would end the process.
      log.error('applying a config file failed', { file: origin, error: String((err as Error)?.stack ?? err) });
    }
    log.debug('config file read', { file: origin, objects: next?.objects.size ?? 0, removed: next === undefined });
  }

  /**
   * Takes `next` as what file `name` holds (undefined: the file is gone) and
   * tells the model what changed: for each object, the copy of the file that
   * sorts first, or its removal when no file holds it any more.
   */
  #replace(name: string, previous: FileState | undefined, next: FileState | undefined, events: SourceEvents): void {
    for (const key of previous?.objects.keys() ?? []) this.#holders.get(key)?.delete(name);
    if (next) this.#files.set(name, next);
    else this.#files.delete(name);
    for (const key of next?.objects.keys() ?? []) {
      let holders = this.#holders.get(key);
      if (!holders) this.#holders.set(key, (holders = new Set()));
      holders.add(name);
    }
    // Files whose rejections may have changed with this read: they report again.
    const report = new Set([name]);
    for (const key of new Set([...previous?.objects.keys() ?? [], ...next?.objects.keys() ?? []])) {
      const holders = this.#holders.get(key)!;
      const before = this.#owners.get(key);
      const winner = [...holders].sort()[0];
      if (winner === undefined) {
        this.#holders.delete(key);
        this.#owners.delete(key);
        const obj = previous!.objects.get(key)!;
        if (before !== undefined) events.remove(obj.kind, obj.metadata.namespace ?? '', obj.metadata.name);
        continue;
      }
      this.#owners.set(key, winner);
      if (winner === name || winner !== before) events.upsert(this.#files.get(winner)!.objects.get(key)!, join(this.dir, winner));
      if (holders.size > 1 || before !== winner) for (const file of holders) report.add(file);
    }
    for (const file of report) this.#report(file, events);
  }

  /** Everything `name` could not apply, in full: its refused documents or caps, and the copies another file wins. */
  #report(name: string, events: SourceEvents): void {
    const origin = join(this.dir, name);
    events.reread(origin);
    const state = this.#files.get(name);
    if (!state) return;
    for (const p of state.problems) events.invalid(origin, p.object, p.error);
    for (const [key, obj] of state.objects) {
      const owner = this.#owners.get(key);
      if (owner === undefined || owner === name) continue;
      const object = describeObject(obj);
      events.invalid(origin, object, new InvalidObjectError(object, 'metadata.name',
        `also defined in ${join(this.dir, owner)}, whose path sorts first: that definition applies and this one is ignored`));
    }
  }
}

/**
 * The file's text, or null when it is gone. At most `max` + 1 bytes are read, so
 * a bigger file is refused before it is in memory.
 */
function readCapped(path: string, max: number): string | null {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO named *.yaml must not hang the control plane in open().
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FileRefused(`cannot read: ${(err as Error).message}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new FileRefused('not a regular file');
    const tooBig = () => new FileRefused(`${stat.size} bytes, over the cap of ${max} bytes per file: split it into smaller files`);
    if (stat.size > max) throw tooBig();
    const buffer = Buffer.allocUnsafe(max + 1);
    let length = 0;
    for (let n = -1; n !== 0 && length <= max; length += n) n = readSync(fd, buffer, length, max + 1 - length, null);
    if (length > max) throw tooBig();
    return buffer.toString('utf8', 0, length);
  } catch (err) {
    throw err instanceof FileRefused ? err : new FileRefused(`cannot read: ${(err as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/** A file's objects, and the documents refused alone; throws FileRefused when the file is over a cap. */
function parseFile(text: string, limits: FileLimits): FileState {
  const objects = new Map<ObjectKey, KubeObject>();
  const firstDoc = new Map<ObjectKey, number>();
  const problems: Problem[] = [];
  const lines = new LineCounter();
  let index = 0;
  for (const doc of documents(text, limits, lines)) {
    index++;
    if (index > limits.documents) throw new FileRefused(`more than ${limits.documents} YAML documents, over the cap per file: split it into smaller files`);
    const object = `doc #${index}`;
    const value = documentValue(doc, limits, lines);
    if (value instanceof Error) {
      problems.push({ object, error: value });
      continue;
    }
    if (value === null || value === undefined) continue;
    const shape = shapeProblem(value);
    if (shape) {
      problems.push({ object, error: new Error(shape) });
      continue;
    }
    const obj = value as KubeObject;
    const key = objectKey(obj);
    const first = firstDoc.get(key);
    if (first !== undefined) {
      problems.push({ object, error: new InvalidObjectError(object, 'metadata.name', `${describeObject(obj)} is already defined by doc #${first} of this file: that definition applies and this one is ignored`) });
      continue;
    }
    firstDoc.set(key, index);
    objects.set(key, obj);
  }
  return { objects, problems };
}

/**
 * The YAML documents of `text`, composed one at a time as the lexer reaches
 * them. Throws FileRefused as soon as a document has too many nodes or nests
 * too deep: before the parser pays for the rest.
 */
function* documents(text: string, limits: FileLimits, lines: LineCounter): Generator<Document.Parsed> {
  lines.addNewLine(0);
  const parser = new Parser(lines.addNewLine);
  // Duplicate keys are found by documentValue: yaml's own check is quadratic in a map's size.
  const composer = new Composer({ uniqueKeys: false, logLevel: 'error' });
  const at = () => lineOf(lines, parser.offset);
  let nodes = 0;
  for (const lexeme of new Lexer().lex(text)) {
    if (lexeme === '---' || lexeme === '...') nodes = 0;
    else if (STARTS_NODE.has(lexeme[0]!) && ++nodes > limits.nodes) {
      throw new FileRefused(`a document with more than ${limits.nodes} YAML nodes${at()}, over the cap per document: split it`);
    }
    for (const token of parser.next(lexeme)) yield* composer.next(token);
    if (parser.stack.length > limits.depth) throw new FileRefused(`nested more than ${limits.depth} levels deep${at()}, over the cap`);
  }
  for (const token of parser.end()) yield* composer.next(token);
  yield* composer.end(false, text.length);
}

// The lexemes that begin a node: a plain or block scalar (the lexer's SCALAR
// mark), a quoted scalar, a flow collection, an alias.
const STARTS_NODE = new Set(['\x1f', '"', "'", '[', '{', '*']);

/** The document as plain data, or why it is refused. */
function documentValue(doc: Document.Parsed, limits: FileLimits, lines: LineCounter): unknown {
  const error = doc.errors[0];
  if (error) return new Error(`not valid YAML: ${error.message}${lineOf(lines, error.pos[0])}`);
  const duplicate = duplicateKey(doc, lines);
  if (duplicate) return new Error(`not valid YAML: ${duplicate}`);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: limits.aliases });
  } catch (err) {
    const message = String((err as Error)?.message ?? err);
    if (/excessive alias count/i.test(message)) return new Error(`its aliases expand past the cap (maxAliasCount ${limits.aliases}): ${message}`);
    return new Error(`not valid YAML: ${message}`);
  }
  // Aliases share a value rather than copy it, so what a reader walks can still
  // be far bigger than what was parsed, or endless (an alias inside its anchor).
  if (!withinNodes(value, limits.nodes)) return new Error(`its aliases expand it past ${limits.nodes} YAML nodes, over the cap per document (or an alias refers to a node that contains it)`);
  return value;
}

function duplicateKey(doc: Document.Parsed, lines: LineCounter): string | null {
  const pending: unknown[] = [doc.contents];
  while (pending.length > 0) {
    const node = pending.pop();
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        if (isScalar(pair.key)) {
          const key = String(pair.key.value);
          if (seen.has(key)) return `the key ${quote(key)} appears twice in one mapping${lineOf(lines, pair.key.range?.[0])}`;
          seen.add(key);
        } else {
          pending.push(pair.key);
        }
        pending.push(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) pending.push(item);
    }
  }
  return null;
}

/** Whether a walk of `value` (an alias's value once per alias) sees at most `max` nodes. */
function withinNodes(value: unknown, max: number): boolean {
  const pending: unknown[] = [value];
  for (let seen = 0; pending.length > 0; ) {
    const v = pending.pop();
    if (++seen > max) return false;
    if (typeof v === 'object' && v !== null) for (const child of Object.values(v)) pending.push(child);
  }
  return true;
}

function lineOf(lines: LineCounter, offset: number | undefined): string {
  if (offset === undefined) return '';
  const { line, col } = lines.linePos(offset);
  return ` (line ${line}, column ${col})`;
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

/** The model's identity of an object: a namespaced object without a namespace is in "default". */
function objectKey(obj: KubeObject): ObjectKey {
  const group = obj.apiVersion.includes('/') ? obj.apiVersion.slice(0, obj.apiVersion.indexOf('/')) : '';
  const namespace = obj.kind === 'Namespace' ? '' : obj.metadata.namespace || 'default';
  return `${group}/${obj.kind}/${namespace}/${obj.metadata.name}`;
}
