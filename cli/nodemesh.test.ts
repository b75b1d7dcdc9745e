import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority } from '../controlplane/ca.ts';

const CLI = fileURLToPath(new URL('./nodemesh.ts', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('cli: version and help', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const v = await run(['version']);
  assert.equal(v.code, 0);
  assert.equal(v.stdout, `nodemesh ${pkg.version}\n`);
  const h = await run(['help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /commands:\n {2}controlplane/);
  const nodeHelp = await run(['node', '--help']);
  assert.equal(nodeHelp.code, 0);
  assert.match(nodeHelp.stdout, /--node-name <value>/);
});

test('cli: unknown command or flag exits 2 with a clear error and usage', async () => {
  const cmd = await run(['frobnicate']);
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /unknown command "frobnicate"/);
  assert.match(cmd.stderr, /usage: nodemesh <command>/);
  const flag = await run(['node', '--node-name', 'n1', '--bogus']);
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /--bogus/);
  assert.match(flag.stderr, /usage: nodemesh node/);
  const none = await run([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no command given/);
  const missing = await run(['node']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing required --node-name, --controlplane, --token-file, --ca-file/);
});

test('cli: node starts without a reachable control plane and exits 0 on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await CertificateAuthority.create();
  writeFileSync(join(dir, 'ca.pem'), ca.rootPem);
  writeFileSync(join(dir, 'token'), 'node-1-token-0123456789');
  const child = spawn(process.execPath, [
    CLI, 'node', '--node-name', 'node-1', '--controlplane', '127.0.0.1:1', '--token-file', join(dir, 'token'),
    '--ca-file', join(dir, 'ca.pem'), '--state-dir', join(dir, 'state'), '--no-dataplane',
    '--admin-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--health-addr', '127.0.0.1:0',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  const started = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.includes('node agent started')) resolve();
    });
    child.on('close', () => reject(new Error(`exited before starting: ${stderr}`)));
  });
  await started;
  const admin = (JSON.parse(stderr.split('\n').find((l) => l.includes('node agent started'))!) as { admin: string }).admin;
  const dump = await (await fetch(`http://${admin}/config_dump`)).json();
  assert.equal(dump.node, 'node-1');
  assert.equal(dump.controlPlane.connected, false);
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  child.kill('SIGTERM');
  assert.equal(await exit, 0);
  assert.match(stderr, /node agent stopped/);
});
