// What a hostile user found in the config directory, each through the real
// control plane in-process (file source, model, gRPC server): nothing in a
// config file stops it, and a node that connects still gets the rest.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { updateFromWire } from '../core/wire.ts';
import { firstWatchMessage } from '../testdata/watch-client.ts';
import { CertificateAuthority } from './ca.ts';
import { FileSource } from './file-source.ts';
import { FileTokenAuthenticator } from './node-auth.ts';
import { startControlPlane, type RunningControlPlane } from './server.ts';

const TOKEN = '0123456789abcdef0123456789abcdef';

const NAMESPACE = 'apiVersion: v1\nkind: Namespace\nmetadata: { name: demo, annotations: { nodemesh.io/mesh: enabled } }\n';

function pod(name: string, ip: string, metadata = '', labels = '{}'): string {
  return `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: demo, uid: uid-${name}, labels: ${labels}${metadata} }\nspec: { nodeName: node-1 }\nstatus: { podIP: ${ip} }\n`;
}

// A "billion laughs" in 300 bytes: nine levels of nine aliases each.
const ALIAS_BOMB = ['a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]', ...'bcdefghi'.split('').map((name, i) => {
  const prev = 'abcdefghi'[i]!;
  return `${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`;
})].join('\n') + '\n';

async function start(t: TestContext, files: Record<string, string>): Promise<{ cp: RunningControlPlane; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-hostile-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const cp = await startControlPlane({
    source: new FileSource(dir),
    listen: '127.0.0.1:0',
    ca: await CertificateAuthority.create(),
    authenticator: new FileTokenAuthenticator({ 'node-1': TOKEN }),
  });
  t.after(() => cp.stop());
  return { cp, dir };
}

/** What node-1 is sent when it connects now: its workloads by name, and anything it could not convert. */
async function nodeSees(cp: RunningControlPlane): Promise<Map<string, Record<string, string>>> {
  const { update, rejected } = updateFromWire(await firstWatchMessage(cp.address, Buffer.from(cp.caPem), 'node-1', TOKEN));
  assert.deepEqual(rejected, []);
  const workloads = new Map<string, Record<string, string>>();
  for (const r of update.upserts) if (r.kind === 'workload') workloads.set(r.workload.name, r.workload.labels);
  return workloads;
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function rejections(cp: RunningControlPlane, dir: string): { file: string; object: string; field: string; reason: string }[] {
  return cp.model.rejected().map((r) => ({ file: r.origin.slice(dir.length + 1), object: r.object, field: r.field, reason: r.reason }));
}

test('a Pod whose ownerReferences is not a list is rejected alone, naming the field; the control plane keeps serving', async (t) => {
  const { cp, dir } = await start(t, {
    'namespace.yaml': NAMESPACE,
    'pods.yaml': `${pod('good', '10.244.1.10')}---\n${pod('bad', '10.244.1.11', ', ownerReferences: oops')}`,
  });
  assert.deepEqual(rejections(cp, dir), [{ file: 'pods.yaml', object: 'Pod demo/bad', field: 'metadata.ownerReferences', reason: 'must be a list, got string "oops"' }]);
  assert.deepEqual([...(await nodeSees(cp)).keys()], ['good']);

  // Live, too: another such Pod arrives with an edit of the good one; the edit applies.
  await writeFile(join(dir, 'more.yaml'), pod('worse', '10.244.1.12', ', ownerReferences: { kind: ReplicaSet }'));
  await writeFile(join(dir, 'pods.yaml'), pod('good', '10.244.1.10', '', '{ app: edited }'));
  await until('the edit and the new rejection', () => cp.model.workloadByUid('uid-good')?.labels.app === 'edited' && cp.model.rejected().length === 1);
  assert.deepEqual(rejections(cp, dir).map((r) => [r.file, r.object, r.field]), [['more.yaml', 'Pod demo/worse', 'metadata.ownerReferences']]);
  assert.deepEqual(await nodeSees(cp), new Map([['good', { app: 'edited' }]]));
});

test('a YAML alias bomb is rejected as its file\'s error and the rest of the directory applies; the control plane starts with it present', async (t) => {
  assert.ok(ALIAS_BOMB.length < 400, `${ALIAS_BOMB.length} bytes`);
  const { cp, dir } = await start(t, { 'bomb.yaml': ALIAS_BOMB, 'namespace.yaml': NAMESPACE, 'pods.yaml': pod('good', '10.244.1.10') });
  assert.deepEqual(rejections(cp, dir).map((r) => [r.file, r.object]), [['bomb.yaml', 'doc #1']]);
  assert.match(rejections(cp, dir)[0]!.reason, /its aliases expand past the cap \(maxAliasCount 100\)/);
  assert.deepEqual([...(await nodeSees(cp)).keys()], ['good']);

  // Dropped in while running: refused the same way, and edits keep applying.
  await writeFile(join(dir, 'bomb-2.yaml'), `${pod('hidden', '10.244.1.13')}---\n${ALIAS_BOMB}`);
  await writeFile(join(dir, 'pods.yaml'), pod('good', '10.244.1.10', '', '{ app: edited }'));
  await until('the edit and the second bomb', () => cp.model.workloadByUid('uid-good')?.labels.app === 'edited' && cp.model.rejected().length === 2);
  assert.deepEqual(rejections(cp, dir).map((r) => [r.file, r.object]), [['bomb.yaml', 'doc #1'], ['bomb-2.yaml', 'doc #2']]);
  assert.deepEqual([...(await nodeSees(cp)).keys()].sort(), ['good', 'hidden'], 'the good document of the bomb\'s file applies');
});

test('a file over the size cap is rejected whole, named', async (t) => {
  const big = `${pod('big', '10.244.1.20')}#${'x'.repeat(1024 * 1024)}\n`;
  const { cp, dir } = await start(t, { 'big.yaml': big, 'namespace.yaml': NAMESPACE, 'pods.yaml': pod('good', '10.244.1.10') });
  assert.deepEqual(rejections(cp, dir), [{ file: 'big.yaml', object: 'file', field: '', reason: `${big.length} bytes, over the cap of 1048576 bytes per file: split it into smaller files` }]);
  assert.deepEqual([...(await nodeSees(cp)).keys()], ['good'], 'nothing of the big file applies');
});

test('the same Pod in two files: both files named, the first path wins whichever was read last', async (t) => {
  const { cp, dir } = await start(t, {
    'a.yaml': pod('web', '10.244.1.30', '', '{ from: a }'),
    'b.yaml': pod('web', '10.244.1.31', '', '{ from: b }'),
    'namespace.yaml': NAMESPACE,
  });
  const conflict = { file: 'b.yaml', object: 'Pod demo/web', field: 'metadata.name', reason: `also defined in ${join(dir, 'a.yaml')}, whose path sorts first: that definition applies and this one is ignored` };
  assert.deepEqual(rejections(cp, dir), [conflict]);
  assert.deepEqual(await nodeSees(cp), new Map([['web', { from: 'a' }]]));

  // b.yaml read last: a.yaml's copy still applies. (The new Pod shows that b.yaml was read.)
  await writeFile(join(dir, 'b.yaml'), `${pod('web', '10.244.1.31', '', '{ from: b2 }')}---\n${pod('marker-b', '10.244.1.40')}`);
  await until('b.yaml read', () => cp.model.workloadByUid('uid-marker-b') !== undefined);
  assert.deepEqual(rejections(cp, dir), [conflict]);
  assert.deepEqual((await nodeSees(cp)).get('web'), { from: 'a' });

  // a.yaml read last: its new copy applies, b.yaml's is still the one listed.
  await writeFile(join(dir, 'a.yaml'), pod('web', '10.244.1.30', '', '{ from: a2 }'));
  await until('a.yaml read', () => cp.model.workloadByUid('uid-web')?.labels.from === 'a2');
  assert.deepEqual(rejections(cp, dir), [conflict]);

  // Gone from a.yaml: b.yaml's copy applies and the conflict is no longer listed.
  await writeFile(join(dir, 'a.yaml'), '');
  await until('b.yaml\'s copy', () => cp.model.workloadByUid('uid-web')?.labels.from === 'b2');
  assert.deepEqual(rejections(cp, dir), []);
  assert.deepEqual((await nodeSees(cp)).get('web'), { from: 'b2' });
});

test('a Pod whose limit annotation is not a whole number is rejected alone, naming the annotation; a good limit reaches the node', async (t) => {
  const { cp, dir } = await start(t, {
    'namespace.yaml': NAMESPACE,
    'pods.yaml': `${pod('capped', '10.244.1.20', ', annotations: { nodemesh.io/max-connections: "2000" }')}---\n${pod('hostile', '10.244.1.21', ', annotations: { nodemesh.io/max-connections: "-1" }')}`,
  });
  assert.deepEqual(rejections(cp, dir), [{
    file: 'pods.yaml', object: 'Pod demo/hostile', field: 'metadata.annotations["nodemesh.io/max-connections"]', reason: 'must be a whole number from 1 to 1000000, got "-1"',
  }]);
  const { update } = updateFromWire(await firstWatchMessage(cp.address, Buffer.from(cp.caPem), 'node-1', TOKEN));
  const capped = update.upserts.flatMap((r) => (r.kind === 'workload' ? [r.workload] : []));
  assert.deepEqual(capped.map((w) => [w.name, w.maxConnections]), [['capped', 2000]]);
});
