import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, rename, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FileSource } from './file-source.ts';
import { MeshModel } from './mesh-model.ts';
import type { ConfigUpdate } from '../core/types.ts';

const NAMESPACES = `
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  annotations:
    nodemesh.io/mesh: enabled
`;

function pods(label: string): string {
  return `
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: demo, uid: uid-a, labels: { app: ${label} } }
spec: { nodeName: node-1 }
status: { podIP: 10.0.0.1 }
---
# a document without kind
apiVersion: v1
metadata: { name: nameless }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: demo, uid: uid-b }
spec: { nodeName: node-2 }
status: { podIP: 10.0.0.2 }
---
kind: Pod
metadata: [broken
`;
}

async function setup(t: import('node:test').TestContext, files: Record<string, string>): Promise<{ dir: string; model: MeshModel; deltas: ConfigUpdate[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-files-'));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const model = new MeshModel();
  const source = new FileSource(dir);
  t.after(async () => {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await source.start(model);
  await model.whenSynced();
  const deltas: ConfigUpdate[] = [];
  model.subscribe((d) => deltas.push(d));
  return { dir, model, deltas };
}

function nextDelta(model: MeshModel, timeoutMs = 2000): Promise<ConfigUpdate> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no delta within ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = model.subscribe((d) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(d);
    });
  });
}

test('initial load: every YAML file and document; broken documents are reported alone', async (t) => {
  const { dir, model } = await setup(t, { 'namespaces.yaml': NAMESPACES, 'pods.yml': pods('server'), 'notes.txt': 'kind: Pod' });
  assert.equal(model.workloadByUid('uid-a')!.enrolled, true);
  assert.equal(model.workloadByUid('uid-b')!.node, 'node-2');
  const rejected = model.rejected().map((r) => ({ origin: r.origin, object: r.object, reason: r.reason }));
  assert.equal(rejected.length, 2);
  assert.deepEqual(rejected[0], { origin: join(dir, 'pods.yml'), object: 'doc #2', reason: 'kind: required' });
  assert.equal(rejected[1]!.object, 'doc #4');
  assert.match(rejected[1]!.reason, /not valid YAML/);
});

test('an edit reaches the model within a second; removed objects and files are removed', async (t) => {
  const { dir, model } = await setup(t, { 'namespaces.yaml': NAMESPACES, 'pods.yaml': pods('server') });
  const start = performance.now();
  const edited = nextDelta(model);
  await writeFile(join(dir, 'pods.yaml'), pods('canary'));
  const delta = await edited;
  const ms = performance.now() - start;
  console.log(`file edit -> delta: ${ms.toFixed(0)} ms`);
  assert.ok(ms < 1000, `edit applied after ${ms} ms`);
  assert.deepEqual(delta.upserts.map((r) => r.key), ['uid-a']);
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'canary');

  const removed = nextDelta(model);
  await writeFile(join(dir, 'pods.yaml'), pods('canary').split('---')[0]!);
  assert.deepEqual((await removed).removals, [{ kind: 'workload', key: 'uid-b' }]);
  assert.equal(model.rejected().length, 0, 'the broken documents left with the edit');

  const unenrolled = nextDelta(model);
  await unlink(join(dir, 'namespaces.yaml'));
  const d = await unenrolled;
  assert.equal(d.upserts.length, 1);
  assert.equal(model.workloadByUid('uid-a')!.enrolled, false);
});

test('editors that save through a temporary file and rename are followed', async (t) => {
  const { dir, model } = await setup(t, { 'pods.yaml': pods('server') });
  const edited = nextDelta(model);
  await writeFile(join(dir, '.pods.yaml.swp'), pods('renamed'));
  await rename(join(dir, '.pods.yaml.swp'), join(dir, 'pods.yaml'));
  await edited;
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'renamed');
});

test('an object moved to another file stays, a new file is picked up', async (t) => {
  const podA = pods('server').split('---')[0]!;
  const { dir, model } = await setup(t, { 'one.yaml': podA });
  const added = nextDelta(model);
  await writeFile(join(dir, 'two.yaml'), podA.replace('app: server', 'app: moved'));
  await added;
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'moved');
  const deltas: ConfigUpdate[] = [];
  model.subscribe((d) => deltas.push(d));
  await writeFile(join(dir, 'one.yaml'), '');
  // Nothing changes for the nodes, so there is no delta to wait for: give the debounce time.
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(deltas, []);
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'moved', 'still defined by two.yaml');
});

test('a missing directory fails start with the path', async () => {
  const source = new FileSource(join(tmpdir(), 'nodemesh-does-not-exist'));
  await assert.rejects(source.start(new MeshModel()), /--source .*nodemesh-does-not-exist: cannot read the config directory/);
});
