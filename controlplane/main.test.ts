import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { meshService, updateFromWire, type WireUpdate } from '../core/wire.ts';

const CLI = fileURLToPath(new URL('../cli/nodemesh.ts', import.meta.url));
const DEMO = fileURLToPath(new URL('../examples/demo', import.meta.url));

async function demoToken(node: string): Promise<string> {
  const text = await readFile(join(DEMO, 'node-tokens'), 'utf8');
  const m = new RegExp(`^${node}:\\s*(\\S+)$`, 'm').exec(text);
  assert.ok(m, `${node} in examples/demo/node-tokens`);
  return m[1]!;
}

test('nodemesh controlplane serves the demo config, writes the CA file and stops on SIGTERM', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-main-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const caDir = join(dir, 'ca');
  const child = spawn(process.execPath, [CLI, 'controlplane', '--source', DEMO, '--listen', '127.0.0.1:0', '--ca-dir', caDir, '--node-tokens', join(DEMO, 'node-tokens')], {
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
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
      const m = /"msg":"control plane running","address":"([^"]+)"/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('exit', (code) => reject(new Error(`control plane exited with ${code}:\n${stderr}`)));
  });
  assert.equal((await stat(join(caDir, 'ca-key.pem'))).mode & 0o777, 0o600);
  const caPem = await readFile(join(caDir, 'ca-cert.pem'));

  const Mesh = meshService();
  const client = new Mesh(address, grpc.credentials.createSsl(caPem)) as unknown as grpc.Client & {
    Watch(req: { node: string }, md: grpc.Metadata): grpc.ClientReadableStream<WireUpdate>;
  };
  t.after(() => client.close());
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${await demoToken('node-1')}`);
  const stream = client.Watch({ node: 'node-1' }, md);
  const [message] = (await once(stream, 'data')) as [WireUpdate];
  // Cancelling ends the call with CANCELLED, which is expected here.
  stream.on('error', (err: grpc.ServiceError) => assert.equal(err.code, grpc.status.CANCELLED));
  stream.cancel();
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
  assert.doesNotMatch(stderr, /rejected/, 'the demo config is valid');

  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr);
  assert.match(stderr, /"msg":"control plane stopped"/);
});

test('nodemesh controlplane without required flags is a usage error', () => {
  const res = spawnSync(process.execPath, [CLI, 'controlplane', '--listen', '127.0.0.1:0'], { encoding: 'utf8' });
  assert.equal(res.status, 2);
  assert.match(res.stderr, /missing required --source, --ca-dir, --node-tokens/);
});
