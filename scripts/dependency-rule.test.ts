import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { checkDependencies, importsOf, repositoryFiles } from './dependency-rule.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** The messages the checker reports for a made-up repository. */
function check(files: Record<string, string>): string[] {
  return checkDependencies(new Map(Object.entries(files))).map((v) => v.message);
}

test('dependency rule: every import of the repository follows docs/ARCHITECTURE.md, and no production files import each other in a circle', () => {
  const files = repositoryFiles(ROOT);
  assert.ok(files.size > 100, `found only ${files.size} .ts files: is git listing the repository?`);
  const violations = checkDependencies(files).map((v) => v.message);
  assert.deepEqual(violations, [], `the dependency rule is broken:\n  ${violations.join('\n  ')}`);
});

test('dependency rule: a daemon file importing the agent is reported with the file, the import as written and the rule', () => {
  assert.deepEqual(check({
    'agent/control-client.ts': `export const x = 1;\n`,
    'daemon/outbound.ts': `import { x } from '../agent/control-client.ts';\nimport type { T } from '../core/types.ts';\n`,
    'core/types.ts': `export type T = number;\n`,
  }), [`daemon/outbound.ts imports '../agent/control-client.ts': daemon may import daemon, core`]);
});

test('dependency rule: each production part imports only the parts below it; cli imports all but integration and scripts', () => {
  assert.deepEqual(check({
    'core/a.ts': `import '../daemon/b.ts';`,
    'daemon/b.ts': `import '../core/c.ts';`,
    'core/c.ts': ``,
    'agent/d.ts': `import '../daemon/b.ts'; import '../core/c.ts'; import '../controlplane/e.ts';`,
    'controlplane/e.ts': `import '../core/c.ts'; import '../cli/args.ts';`,
    'cli/args.ts': ``,
    'cli/f.ts': `import './args.ts'; import '../agent/d.ts'; import '../controlplane/e.ts'; import '../integration/g.ts'; import '../scripts/h.ts';`,
    'integration/g.ts': ``,
    'scripts/h.ts': ``,
  }), [
    `core/a.ts imports '../daemon/b.ts': core may import core`,
    `agent/d.ts imports '../controlplane/e.ts': agent may import agent, daemon, core`,
    `controlplane/e.ts imports '../cli/args.ts': controlplane may import controlplane, core`,
    `cli/f.ts imports '../integration/g.ts': cli may import cli, agent, daemon, controlplane, core`,
    `cli/f.ts imports '../scripts/h.ts': cli may import cli, agent, daemon, controlplane, core`,
  ]);
});

test('dependency rule: production code never imports a test or a testdata/ folder', () => {
  assert.deepEqual(check({
    'daemon/a.ts': `import { f } from './testdata/fixture.ts';\nimport { g } from './a.test.ts';\nimport { h } from '../testdata/mesh-ca.ts';\n`,
    'daemon/testdata/fixture.ts': ``,
    'daemon/a.test.ts': ``,
    'testdata/mesh-ca.ts': ``,
  }), [
    `daemon/a.ts imports './testdata/fixture.ts': production code never imports tests or testdata/; daemon may import daemon, core`,
    `daemon/a.ts imports './a.test.ts': production code never imports tests or testdata/; daemon may import daemon, core`,
    `daemon/a.ts imports '../testdata/mesh-ca.ts': production code never imports tests or testdata/; daemon may import daemon, core`,
  ]);
});

test('dependency rule: tests and a part\'s testdata/ follow their part, plus their own testdata/ and the root testdata/', () => {
  assert.deepEqual(check({
    'agent/a.test.ts': [
      `import '../daemon/config-store.ts';`, `import '../testdata/mesh-ca.ts';`, `import './testdata/two-nodes.ts';`,
      `import '../daemon/testdata/mesh-fixture.ts';`, `import '../controlplane/ca.ts';`, `import '../integration/cluster/netns.ts';`,
    ].join('\n'),
    'daemon/testdata/mesh-fixture.ts': `import '../config-store.ts'; import '../../testdata/mesh-ca.ts'; import '../../controlplane/ca.ts';`,
    'daemon/l7/b.test.ts': `import '../testdata/mesh-fixture.ts'; import '../../agent/c.ts';`,
    'daemon/config-store.ts': ``,
    'agent/testdata/two-nodes.ts': ``,
    'agent/c.ts': ``,
    'testdata/mesh-ca.ts': `import '../controlplane/ca.ts';`,
    'controlplane/ca.ts': ``,
    'integration/cluster/netns.ts': ``,
  }), [
    `agent/a.test.ts imports '../daemon/testdata/mesh-fixture.ts': tests of agent may import agent, daemon, core, agent/testdata/ and testdata/`,
    `agent/a.test.ts imports '../controlplane/ca.ts': tests of agent may import agent, daemon, core, agent/testdata/ and testdata/`,
    `agent/a.test.ts imports '../integration/cluster/netns.ts': tests of agent may import agent, daemon, core, agent/testdata/ and testdata/`,
    `daemon/testdata/mesh-fixture.ts imports '../../controlplane/ca.ts': daemon/testdata/ may import daemon, core, daemon/testdata/ and testdata/`,
    `daemon/l7/b.test.ts imports '../../agent/c.ts': tests of daemon may import daemon, core, daemon/testdata/ and testdata/`,
  ]);
});

test('dependency rule: the root testdata/ builds on production code of any part, never on tests; integration, scripts and manifests import anything', () => {
  assert.deepEqual(check({
    'testdata/mesh-ca.ts': `import '../controlplane/ca.ts'; import '../agent/csr.ts'; import './other.ts'; import '../agent/csr.test.ts'; import '../daemon/testdata/f.ts'; import '../integration/g.ts';`,
    'testdata/other.ts': ``,
    'controlplane/ca.ts': ``,
    'agent/csr.ts': ``,
    'agent/csr.test.ts': ``,
    'daemon/testdata/f.ts': ``,
    'integration/g.ts': `import '../agent/csr.test.ts'; import '../daemon/testdata/f.ts'; import '../controlplane/ca.ts';`,
    'integration/in-process/h.test.ts': `import '../../agent/csr.ts'; import '../../controlplane/ca.ts'; import '../cluster/x.ts';`,
    'scripts/i.ts': `import '../cli/j.ts';`,
    'manifests/k.test.ts': `import '../controlplane/ca.ts';`,
  }), [
    `testdata/mesh-ca.ts imports '../agent/csr.test.ts': testdata/ may import production code of core, daemon, agent, controlplane, cli and testdata/, never tests`,
    `testdata/mesh-ca.ts imports '../daemon/testdata/f.ts': testdata/ may import production code of core, daemon, agent, controlplane, cli and testdata/, never tests`,
    `testdata/mesh-ca.ts imports '../integration/g.ts': testdata/ may import production code of core, daemon, agent, controlplane, cli and testdata/, never tests`,
  ]);
});

test('dependency rule: a circular import among production files is reported as its cycle; tests in a circle are not production', () => {
  assert.deepEqual(check({
    'daemon/a.ts': `import './b.ts';`,
    'daemon/b.ts': `import type { C } from './l7/c.ts';`,
    'daemon/l7/c.ts': `export type C = 1; import('../a.ts');`,
    'core/self.ts': `export * from './self.ts';`,
    'agent/x.test.ts': `import './y.test.ts';`,
    'agent/y.test.ts': `import './x.test.ts';`,
  }), [
    // y.test.ts is a test of agent importing another test: not allowed either.
    `agent/x.test.ts imports './y.test.ts': tests of agent may import agent, daemon, core, agent/testdata/ and testdata/`,
    `agent/y.test.ts imports './x.test.ts': tests of agent may import agent, daemon, core, agent/testdata/ and testdata/`,
    `circular import among production files: core/self.ts -> core/self.ts`,
    `circular import among production files: daemon/a.ts -> daemon/b.ts -> daemon/l7/c.ts -> daemon/a.ts`,
  ]);
});

test('dependency rule: imports are read as TypeScript reads them: static, type-only, re-exports, side effects, import() with a literal; not comments or strings', () => {
  const source = [
    `import { a } from './a.ts';`,
    `import type { B } from '../b.ts';`,
    `export { c } from './c.ts';`,
    `export * from './d.ts';`,
    `import './e.ts';`,
    `const f = await import('./f.ts');`,
    `let g: import('./g.ts').G;`,
    `import fs from 'node:fs';`,
    `import * as grpc from '@grpc/grpc-js';`,
    `// import { h } from './h.ts';`,
    `/* import { i } from './i.ts'; */`,
    `const j = "import { j } from './j.ts'";`,
    `const k = import(\`./\${name}.ts\`);`,
  ].join('\n');
  assert.deepEqual(importsOf(source), ['./a.ts', '../b.ts', './c.ts', './d.ts', './e.ts', './f.ts', './g.ts']);
});

test('dependency rule: an import that leaves the repository is reported', () => {
  assert.deepEqual(check({ 'core/a.ts': `import '../../elsewhere/b.ts';` }), [`core/a.ts imports '../../elsewhere/b.ts': it leaves the repository`]);
});
