import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DIST_DIR, buildDist } from './build.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const run = promisify(execFile);

test('build: the bundle runs on its own, laid out as in the image (dist, proto, package.json, node_modules)', async (t) => {
  await buildDist();
  const app = mkdtempSync(join(tmpdir(), 'nodemesh-build-'));
  t.after(() => rmSync(app, { recursive: true, force: true }));
  cpSync(DIST_DIR, join(app, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'proto'), join(app, 'proto'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
  const cli = join(app, 'dist', 'nodemesh.mjs');

  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal((await run(process.execPath, [cli, 'version'])).stdout, `nodemesh ${pkg.version}\n`);
  // Each subcommand loads its own chunk; --help parses the flags and stops.
  assert.match((await run(process.execPath, [cli, 'node', '--help'])).stdout, /--node-name/);
  assert.match((await run(process.execPath, [cli, 'controlplane', '--help'])).stdout, /--source/);
  // The image has no demo: the bundle says so instead of failing on a missing module.
  const demo = await run(process.execPath, [cli, 'demo', '--once']).then(() => assert.fail('demo ran without integration/'), (err: { code: number; stderr: string }) => err);
  assert.equal(demo.code, 1);
  assert.match(demo.stderr, /this build has no demo/);
});

// The bundle is built without esbuild's keepNames (a defineProperty per closure made each one a
// dictionary-mode object: 1.5 MiB per 1,000 tunnels). Error names come from their classes
// (core/errors.ts: new.target.name), so no error class of ours may be renamed by the bundler.
test('build: every error class of ours keeps its name in the bundle', async () => {
  await buildDist();
  const bundle = readdirSync(DIST_DIR).filter((f) => f.endsWith('.mjs')).map((f) => readFileSync(join(DIST_DIR, f), 'utf8')).join('\n');
  const errors = new Set<string>();
  for (const dir of ['core', 'agent', 'daemon', 'daemon/l7', 'controlplane', 'cli']) {
    for (const file of readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))) {
      for (const m of readFileSync(join(ROOT, dir, file), 'utf8').matchAll(/^export class (\w+) extends \w*Error\b/gm)) errors.add(m[1]!);
    }
  }
  assert.ok(errors.has('IptablesError') && errors.size > 10, `found ${[...errors]}`);
  // esbuild writes `var Name = class extends ...` (named by its binding), or `var Name = class Name2` / `class _Name` when it renamed one.
  for (const name of errors) assert.match(bundle, new RegExp(`\\bvar ${name} = class extends\\b`), `class ${name} is in the bundle under its own name`);
});
