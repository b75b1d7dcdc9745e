import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  const badValue = await run(['node', '--node-name', 'n1', '--controlplane', '127.0.0.1:1', '--token-file', 't', '--ca-file', 'c', '--http-retry-statuses', '503,404']);
  assert.equal(badValue.code, 2);
  assert.match(badValue.stderr, /--http-retry-statuses: "404" is not a whole number from 500 to 599/);
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
  const node = await startProcess(t, [
    'node', '--node-name', 'node-1', '--controlplane', '127.0.0.1:1', '--token-file', join(dir, 'token'),
    '--ca-file', join(dir, 'ca.pem'), '--state-dir', join(dir, 'state'), '--no-dataplane',
    '--admin-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--health-addr', '127.0.0.1:0',
  ], 'node agent started');
  const dump = await (await fetch(`http://${String(node.line.admin)}/config_dump`)).json();
  assert.equal(dump.node, 'node-1');
  assert.equal(dump.controlPlane.connected, false);
  assert.equal(await stopProcess(node.child), 0);
});

/** Starts the CLI; resolves with the fields of the first JSON log line whose msg is `ready`. */
function startProcess(t: import('node:test').TestContext, args: string[], ready: string): Promise<{ child: ChildProcess; line: Record<string, unknown> }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      const line = stderr.split('\n').find((l) => l.includes(`"msg":"${ready}"`));
      if (line) resolve({ child, line: JSON.parse(line) as Record<string, unknown> });
    });
    child.on('close', (code) => reject(new Error(`${args[0]} exited (${code}) before "${ready}": ${stderr}`)));
  });
}

function stopProcess(child: ChildProcess): Promise<number | null> {
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  child.kill('SIGTERM');
  return exit;
}

test('cli: controlplane and node processes: the node gets its certificates, both exit 0 on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(new URL('../testdata/two-nodes/', import.meta.url), join(dir, 'config'), { recursive: true });
  writeFileSync(join(dir, 'node-tokens'), 'node-1: node-1-token-0123456789\n');
  writeFileSync(join(dir, 'token'), 'node-1-token-0123456789\n');
  const cp = await startProcess(t, [
    'controlplane', '--source', join(dir, 'config'), '--listen', '127.0.0.1:0', '--ca-dir', join(dir, 'ca'), '--node-tokens', join(dir, 'node-tokens'),
  ], 'control plane running');
  const node = await startProcess(t, [
    'node', '--node-name', 'node-1', '--controlplane', String(cp.line.address), '--token-file', join(dir, 'token'),
    '--ca-file', join(dir, 'ca', 'ca-cert.pem'), '--state-dir', join(dir, 'state'), '--no-dataplane',
    '--admin-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--health-addr', '127.0.0.1:0',
  ], 'node agent started');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const res = await fetch(`http://${String(node.line.health)}/healthz/ready`);
    if (res.status === 200) break;
    if (Date.now() > deadline) assert.fail(`node never became ready: ${await res.text()}`);
    await sleep(50);
  }
  const certs = await (await fetch(`http://${String(node.line.admin)}/certs`)).json();
  assert.deepEqual(certs.certificates.map((c: { identity: string }) => c.identity).sort(), [
    'spiffe://cluster.local/ns/shop/sa/api', 'spiffe://cluster.local/ns/shop/sa/web',
  ]);
  const metrics = await (await fetch(`http://${String(node.line.metrics)}/metrics`)).text();
  assert.match(metrics, /^nodemesh_agent_control_plane_connected 1$/m);
  assert.equal(await stopProcess(node.child), 0);
  assert.equal(await stopProcess(cp.child), 0);
});

test('cli: node --otlp-endpoint that is not an http(s) URL is a usage error (exit 2) before anything starts', async () => {
  for (const bad of ['file:///etc/passwd', 'http://user:pw@collector:4318', 'collector:4318']) {
    const r = await run(['node', '--node-name', 'n1', '--controlplane', '127.0.0.1:1', '--token-file', 't', '--ca-file', 'c', '--otlp-endpoint', bad]);
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /--otlp-endpoint: /);
  }
});
