// The dependency rule of docs/ARCHITECTURE.md, checked over the imports of every
// tracked .ts file (scripts/dependency-rule.test.ts runs it in `make test`).
//
// Imports are read with the TypeScript compiler's own pre-processor, which sees
// `import ... from`, `export ... from`, `import type`, side-effect imports and
// `import('...')` with a literal string, and skips comments and strings; relative
// specifiers are resolved to repository paths, bare ones (node:, npm) are not ours.
// Files read at run time (proto/, YAML) are not imports and are not checked.
//
// A file's part is its first folder; its kind is a test (`*.test.ts`), test support
// (under a `testdata/` folder) or production. The rule:
//   - production: core → core; daemon → daemon, core; agent → agent, daemon, core;
//     controlplane → controlplane, core; cli → cli, agent, daemon, controlplane, core;
//     never a test or a testdata/ folder; no circular imports;
//   - tests and a part's own testdata/: their part's rule, plus that part's
//     testdata/ and the root testdata/;
//   - root testdata/ (shared fixtures built of real parts): production code of any
//     part and the root testdata/, never tests;
//   - integration/, scripts/ and manifests/: anything.

import ts from 'typescript';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';

/** What each production part may import (its own part included). */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  core: ['core'],
  daemon: ['daemon', 'core'],
  agent: ['agent', 'daemon', 'core'],
  controlplane: ['controlplane', 'core'],
  cli: ['cli', 'agent', 'daemon', 'controlplane', 'core'],
};

/** Parts whose files may import any file of the repository. */
const UNRESTRICTED = new Set(['integration', 'scripts', 'manifests']);

export interface Violation {
  file: string;
  /** The specifier as written, or the files of a cycle joined by ' -> '. */
  specifier: string;
  message: string;
}

type Kind = 'production' | 'test' | 'testdata';

interface FileClass {
  part: string;
  kind: Kind;
  /** The testdata/ folder the file is in ('testdata' for the root one), if any. */
  testdata?: string;
}

export function classify(path: string): FileClass {
  const segments = path.split('/');
  const part = segments.length > 1 ? segments[0]! : '';
  const at = segments.indexOf('testdata');
  if (at >= 0 && at < segments.length - 1) return { part, kind: 'testdata', testdata: segments.slice(0, at + 1).join('/') };
  if (path.endsWith('.test.ts')) return { part, kind: 'test' };
  return { part, kind: 'production' };
}

/** The relative specifiers a file imports, as written, in source order. */
export function importsOf(source: string): string[] {
  return ts.preProcessFile(source, true, false).importedFiles
    .map((f) => f.fileName)
    .filter((name) => name.startsWith('./') || name.startsWith('../'));
}

/** A relative specifier of `from` as a repository path, or null when it leaves the repository. */
export function resolve(from: string, specifier: string, exists: (path: string) => boolean): string | null {
  const joined = posix.normalize(posix.join(posix.dirname(from), specifier));
  if (joined.startsWith('../') || joined === '..') return null;
  for (const candidate of [joined, `${joined}.ts`, `${joined}/index.ts`]) if (exists(candidate)) return candidate;
  return joined;
}

/**
 * Every import that breaks the rule, and every cycle among production files.
 * `files` maps repository paths (forward slashes) to their source text.
 */
export function checkDependencies(files: ReadonlyMap<string, string>): Violation[] {
  const violations: Violation[] = [];
  const graph = new Map<string, string[]>();
  for (const [file, source] of files) {
    if (!file.endsWith('.ts')) continue;
    const from = classify(file);
    const edges: string[] = [];
    // A module imported twice (a type import and a value import) is one dependency.
    for (const specifier of new Set(importsOf(source))) {
      const target = resolve(file, specifier, (p) => files.has(p));
      if (target === null) {
        violations.push({ file, specifier, message: `${file} imports '${specifier}': it leaves the repository` });
        continue;
      }
      const broken = ruleBroken(from, classify(target));
      if (broken) violations.push({ file, specifier, message: `${file} imports '${specifier}': ${broken}` });
      if (from.kind === 'production' && classify(target).kind === 'production' && files.has(target)) edges.push(target);
    }
    if (from.kind === 'production') graph.set(file, edges);
  }
  for (const cycle of cycles(graph)) {
    violations.push({ file: cycle[0]!, specifier: cycle.join(' -> '), message: `circular import among production files: ${cycle.join(' -> ')}` });
  }
  return violations;
}

/** The rule an import from `from` to `to` breaks, said as what `from` may import; null when it is allowed. */
function ruleBroken(from: FileClass, to: FileClass): string | null {
  if (UNRESTRICTED.has(from.part)) return null;
  if (from.part === 'testdata') {
    // The root testdata/: real fixtures of any part, never tests.
    if (to.kind === 'production' && ALLOWED[to.part]) return null;
    if (to.kind === 'testdata' && to.testdata === 'testdata') return null;
    return 'testdata/ may import production code of core, daemon, agent, controlplane, cli and testdata/, never tests';
  }
  const allowed = ALLOWED[from.part];
  if (!allowed) return `${from.part || 'a file at the root'} has no place in the dependency rule (docs/ARCHITECTURE.md)`;
  if (from.kind === 'production') {
    if (to.kind !== 'production') return `production code never imports tests or testdata/; ${from.part} may import ${allowed.join(', ')}`;
    if (allowed.includes(to.part)) return null;
    return `${from.part} may import ${allowed.join(', ')}`;
  }
  // Tests and the part's own testdata/.
  const ownTestdata = `${from.part}/testdata`;
  if (to.kind === 'production' && allowed.includes(to.part)) return null;
  if (to.kind === 'testdata' && (to.testdata === 'testdata' || to.testdata === ownTestdata)) return null;
  const what = from.kind === 'test' ? `tests of ${from.part}` : `${ownTestdata}/`;
  return `${what} may import ${allowed.join(', ')}, ${ownTestdata}/ and testdata/`;
}

/** One cycle per strongly connected component of more than one file (or a file importing itself). */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's algorithm, iterative so a deep import chain cannot overflow the stack.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const found: string[][] = [];
  let next = 0;
  for (const root of [...graph.keys()].sort()) {
    if (index.has(root)) continue;
    const work: { node: string; edge: number }[] = [{ node: root, edge: 0 }];
    index.set(root, next); low.set(root, next); next++;
    stack.push(root); onStack.add(root);
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const edges = graph.get(frame.node) ?? [];
      if (frame.edge < edges.length) {
        const to = edges[frame.edge++]!;
        if (!index.has(to)) {
          index.set(to, next); low.set(to, next); next++;
          stack.push(to); onStack.add(to);
          work.push({ node: to, edge: 0 });
        } else if (onStack.has(to)) {
          low.set(frame.node, Math.min(low.get(frame.node)!, index.get(to)!));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]!.node;
        low.set(parent, Math.min(low.get(parent)!, low.get(frame.node)!));
      }
      if (low.get(frame.node) !== index.get(frame.node)) continue;
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== frame.node);
      const selfImport = (graph.get(frame.node) ?? []).includes(frame.node);
      if (component.length > 1 || selfImport) found.push(cycleIn(new Set(component), graph));
    }
  }
  return found;
}

/** A concrete cycle through a strongly connected component, starting at its first file by name. */
function cycleIn(component: ReadonlySet<string>, graph: ReadonlyMap<string, readonly string[]>): string[] {
  const start = [...component].sort()[0]!;
  // Breadth-first from start back to start, within the component: the shortest cycle through it.
  const cameFrom = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const node = queue.shift()!;
    for (const to of graph.get(node) ?? []) {
      if (!component.has(to)) continue;
      if (to === start) {
        const path = [start];
        for (let at = node; at !== start; at = cameFrom.get(at)!) path.splice(1, 0, at);
        return [...path, start];
      }
      if (!cameFrom.has(to)) { cameFrom.set(to, node); queue.push(to); }
    }
  }
  return [start, start];
}

/** The repository's tracked .ts files (staged new ones included), with their text. */
export function repositoryFiles(root: string): Map<string, string> {
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--', '*.ts'], { cwd: root, encoding: 'utf8' });
  const files = new Map<string, string>();
  for (const path of listed.split('\0')) {
    // A file deleted but not yet staged is listed and absent: it imports nothing.
    if (path === '' || files.has(path) || !existsSync(posix.join(root, path))) continue;
    files.set(path, readFileSync(posix.join(root, path), 'utf8'));
  }
  return files;
}
