import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateFromWire } from '../core/wire.ts';
import { firstWatchMessage } from '../testdata/watch-client.ts';

const CLI = fileURLToPath(new URL('./nodemesh.ts', import.meta.url));
const DEMO = fileURLToPath(new URL('../examples/demo', import.meta.url));

/** Starts `nodemesh controlplane` and resolves with its bound address once it logs it. */
async function startCommand(t: { after(fn: () => unknown): void }, args: string[]): Promise<{ child: ReturnType<typeof spawn>; address: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'controlplane', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // The test reads the info lines, whatever level the test run itself logs at.
    env: { ...process.env, NODEMESH_LOG_LEVEL: 'info' },
  });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control plane did not start:\n${stderr}`)), 10_000);
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk;
      const m = /"msg":"control plane running","address":"([^"]+)"/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('exit', (code) => reject(new Error(`control plane exited with ${code}:\n${stderr}`)));
  });
  return { child, address, stderr: () => stderr };
}

async function demoToken(node: string): Promise<string> {
  const text = await readFile(join(DEMO, 'node-tokens'), 'utf8');
  const m = new RegExp(`^${node}:\\s*(\\S+)$`, 'm').exec(text);
  assert.ok(m, `${node} in examples/demo/node-tokens`);
  return m[1]!;
}

test('nodemesh controlplane serves the demo config, writes the CA file and stops on SIGTERM', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-controlplane-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const caDir = join(dir, 'ca');
  const { child, address, stderr: output } = await startCommand(t, ['--source', DEMO, '--listen', '127.0.0.1:0', '--ca-dir', caDir, '--node-tokens', join(DEMO, 'node-tokens')]);
  assert.equal((await stat(join(caDir, 'ca-key.pem'))).mode & 0o777, 0o600);
  const caPem = await readFile(join(caDir, 'ca-cert.pem'));

  const message = await firstWatchMessage(address, caPem, 'node-1', await demoToken('node-1'));
  const { update, rejected } = updateFromWire(message);
  assert.deepEqual(rejected, []);
  assert.equal(update.snapshot, true);
  const byKind = (kind: string) => update.upserts.filter((r) => r.kind === kind);
  const enrolled = Object.fromEntries(byKind('workload').map((r) => r.kind === 'workload' ? [r.workload.name, r.workload.enrolled] : []));
  assert.deepEqual(enrolled, { client: true, 'server-a': true, 'server-b': true, outsider: false });
  assert.deepEqual(byKind('service').map((r) => r.key).sort(), ['demo/server', 'demo/server-b']);
  const server = byKind('service').find((r) => r.key === 'demo/server');
  assert.ok(server?.kind === 'service');
  assert.deepEqual(server.service.endpoints.map((e) => e.ip), ['10.244.2.10', '10.244.2.11']);
  assert.deepEqual(byKind('route').map((r) => r.key), ['demo/server-canary']);
  const route = byKind('route')[0];
  assert.ok(route?.kind === 'route');
  assert.ok(route.route.rules.every((rule) => rule.backendRefs.every((b) => b.invalidReason === '')));
  assert.deepEqual(byKind('policy').map((r) => r.key), ['demo/deny-legacy-admin']);
  assert.doesNotMatch(output(), /rejected/, 'the demo config is valid');

  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, output());
  assert.match(output(), /"msg":"control plane stopped"/);
});

test('nodemesh controlplane without required flags is a usage error', () => {
  const res = spawnSync(process.execPath, [CLI, 'controlplane', '--listen', '127.0.0.1:0'], { encoding: 'utf8' });
  assert.equal(res.status, 2);
  assert.match(res.stderr, /missing required --source/);
  const dir = spawnSync(process.execPath, [CLI, 'controlplane', '--source', DEMO, '--listen', '127.0.0.1:0'], { encoding: 'utf8' });
  assert.equal(dir.status, 2);
  assert.match(dir.stderr, /--ca-dir and --node-tokens are required/);
});
