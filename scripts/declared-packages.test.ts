// Every package the code imports is declared in package.json, so `npm ci` on a
// fresh machine installs it: what ships (cli, core, agent, daemon, controlplane)
// in "dependencies", tests and the tooling around them in either. A package that
// only arrives as another one's dependency works until that one drops it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { classify, repositoryFiles } from './dependency-rule.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SHIPPED = new Set(['cli', 'core', 'agent', 'daemon', 'controlplane']);

/** The packages a file imports (`import`/`export … from`, `import()` of a literal), by package name. */
function packagesOf(source: string): string[] {
  return ts.preProcessFile(source, true, false).importedFiles
    .map((f) => f.fileName)
    .filter((name) => !name.startsWith('.') && !name.startsWith('/') && !name.startsWith('node:') && !builtinModules.includes(name.split('/')[0]!))
    .map((name) => name.split('/').slice(0, name.startsWith('@') ? 2 : 1).join('/'));
}

test('every package imported by a tracked .ts file is declared in package.json; shipped code uses dependencies only', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  const files = repositoryFiles(ROOT);
  assert.ok(files.size > 100, `found only ${files.size} .ts files: is git listing the repository?`);
  const problems: string[] = [];
  for (const [path, source] of files) {
    const { part, kind } = classify(path);
    const shipped = SHIPPED.has(part) && kind === 'production';
    for (const name of packagesOf(source)) {
      if (name in pkg.dependencies) continue;
      if (name in pkg.devDependencies) {
        if (shipped) problems.push(`${path} imports ${name}, a devDependency: the image installs dependencies only`);
        continue;
      }
      problems.push(`${path} imports ${name}, which package.json does not declare`);
    }
  }
  assert.deepEqual(problems, []);
});

test('declared packages: import specifiers map to package names, built-ins and relative paths are not packages', () => {
  assert.deepEqual(packagesOf(`
    import { a } from 'yaml';
    import type { B } from '@grpc/grpc-js/build/src/x';
    import fs from 'fs';
    import { join } from 'node:path';
    import { c } from './c.ts';
    export { d } from 'ws';
    const e = await import('koffi');
  `), ['yaml', '@grpc/grpc-js', 'ws', 'koffi']);
});
