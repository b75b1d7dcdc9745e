// Listener-level tests need SO_ORIGINAL_DST, i.e. real iptables REDIRECTs: this
// creates a private network namespace, runs testdata/listeners-in-netns.ts inside
// it, and removes the namespace (and with it every rule) afterwards. Needs root.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const SCRIPT = fileURLToPath(new URL('./testdata/listeners-in-netns.ts', import.meta.url));

test('listeners with real REDIRECTs in a network namespace', { timeout: 120_000 }, async (t) => {
  const ns = `nmd-${process.pid}-${randomBytes(3).toString('hex')}`;
  // Fails (not skips) when namespaces cannot be made: these tests must run as root.
  execFileSync('ip', ['netns', 'add', ns]);
  t.after(() => execFileSync('ip', ['netns', 'delete', ns]));
  execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--test', '--test-reporter=tap', SCRIPT], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(),
  });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let output = '';
  child.stdout.on('data', (c) => (output += c));
  child.stderr.on('data', (c) => (output += c));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.diagnostic(output.split('\n').filter((l) => /^(not )?ok|^# (pass|fail)/.test(l.trim())).join('\n'));
  assert.equal(code, 0, output);
});

/** Our environment minus the test runner's own markers, so the child runs as a top-level test run. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NODEMESH_LOG_LEVEL: process.env.NODEMESH_LOG_LEVEL ?? 'error' };
  delete env.NODE_TEST_CONTEXT;
  return env;
}
