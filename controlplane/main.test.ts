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
import { writeFile } from 'node:fs/promises';
import { FakeApiServer } from './testdata/fake-api-server.ts';

const CLI = fileURLToPath(new URL('../cli/nodemesh.ts', import.meta.url));
const DEMO = fileURLToPath(new URL('../examples/demo', import.meta.url));

/** Starts `nodemesh controlplane` and resolves with its bound address once it logs it. */
async function startCommand(t: { after(fn: () => unknown): void }, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ child: ReturnType<typeof spawn>; address: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'controlplane', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // The test reads the info lines, whatever level the test run itself logs at.
    env: { ...process.env, NODEMESH_LOG_LEVEL: 'info', ...env },
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

type MeshClient = grpc.Client & { Watch(req: { node: string }, md: grpc.Metadata): grpc.ClientReadableStream<WireUpdate> };

/** The first Watch message for `node`, authenticated with `token`. */
async function firstWatchMessage(address: string, caPem: Buffer, node: string, token: string, serverName?: string): Promise<WireUpdate> {
  const Mesh = meshService();
  const options = serverName ? { 'grpc.ssl_target_name_override': serverName } : {};
  const client = new Mesh(address, grpc.credentials.createSsl(caPem), options) as unknown as MeshClient;
  try {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const stream = client.Watch({ node }, md);
    const [message] = (await once(stream, 'data')) as [WireUpdate];
    // Cancelling ends the call with CANCELLED, which is expected here.
    stream.on('error', (err: grpc.ServiceError) => assert.equal(err.code, grpc.status.CANCELLED));
    stream.cancel();
    return message;
  } finally {
    client.close();
  }
}

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

test('nodemesh controlplane --source kubernetes against a fake API server: CA in a Secret, TokenReview, informers', async (t) => {
  const fake = await FakeApiServer.start();
  t.after(() => fake.stop());
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-main-k8s-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(kubeconfig, fake.kubeConfig().exportConfig());
  fake.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } } });
  fake.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-web-1' }, spec: { nodeName: 'node-a', serviceAccountName: 'web', containers: [{ name: 'web' }] }, status: { podIP: '10.0.0.5', phase: 'Running' } });
  fake.addToken('node-a-token', { username: 'system:serviceaccount:nodemesh-system:nodemesh-node', audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/node-name': ['node-a'] } });

  const env = { KUBECONFIG: kubeconfig, KUBERNETES_SERVICE_HOST: '', POD_NAMESPACE: 'nodemesh-system' };
  const { child, address, stderr } = await startCommand(t, ['--source', 'kubernetes', '--listen', '127.0.0.1:0'], env);
  const secret = fake.get('Secret', 'nodemesh-system', 'nodemesh-ca') as { data: Record<string, string> } | undefined;
  assert.ok(secret, 'the CA root is stored in Secret nodemesh-system/nodemesh-ca');
  const caPem = Buffer.from(secret.data['ca.crt']!, 'base64');
  const bundle = fake.get('ConfigMap', 'nodemesh-system', 'nodemesh-trust-bundle') as { data: Record<string, string> } | undefined;
  assert.equal(bundle?.data['ca.crt'], caPem.toString(), 'the trust bundle the DaemonSet mounts holds the same root');

  // The nodes dial the Service name, which the serving certificate must carry.
  const message = await firstWatchMessage(address, caPem, 'node-a', 'node-a-token', 'nodemesh-controlplane.nodemesh-system.svc');
  const { update } = updateFromWire(message);
  const workloads = update.upserts.filter((r) => r.kind === 'workload');
  assert.deepEqual(workloads.map((r) => r.kind === 'workload' && `${r.workload.namespace}/${r.workload.name} ${r.workload.enrolled}`), ['shop/web-1 true']);

  await assert.rejects(firstWatchMessage(address, caPem, 'node-a', 'not-a-known-token', 'nodemesh-controlplane.nodemesh-system.svc'), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED);
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr());
});
