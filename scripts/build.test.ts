import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
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
