import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile, rename, unlink } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FileSource, type FileLimits } from './file-source.ts';
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

async function setup(t: import('node:test').TestContext, files: Record<string, string>, limits?: Partial<FileLimits>): Promise<{ dir: string; model: MeshModel; deltas: ConfigUpdate[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-files-'));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const model = new MeshModel();
  const source = new FileSource(dir, { limits });
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

async function until(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
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
  const deltas: ConfigUpdate[] = [];
  model.subscribe((d) => deltas.push(d));
  await writeFile(join(dir, 'two.yaml'), podA.replace('app: server', 'app: moved'));
  await until(() => model.rejected().length === 1);
  // While both files define it, the one whose path sorts first applies: nothing changes for the nodes.
  assert.deepEqual(deltas, []);
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'server');
  const moved = nextDelta(model);
  await writeFile(join(dir, 'one.yaml'), '');
  await moved;
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'moved', 'now defined by two.yaml alone');
  assert.deepEqual(model.rejected(), []);
});

test('a missing directory fails start with the path', async () => {
  const source = new FileSource(join(tmpdir(), 'nodemesh-does-not-exist'));
  await assert.rejects(source.start(new MeshModel()), /--source .*nodemesh-does-not-exist: cannot read the config directory/);
});

/** The model's rejections as [file name, object, reason], for comparing. */
function rejections(model: MeshModel, dir: string): [string, string, string][] {
  return model.rejected().map((r) => [r.origin.slice(dir.length + 1), r.object, r.reason]);
}

const POD_B = pods('server').split('---')[2]!;

test('a file over a cap (documents, YAML nodes per document, nesting) is refused whole, named; the rest of the directory applies', async (t) => {
  const { dir, model } = await setup(t, {
    'documents.yaml': `${POD_B}\n---\n`.repeat(6),
    'nodes.yaml': `${POD_B}\n---\nlist: [${'1,'.repeat(40)}]\n`,
    'nesting.yaml': `${POD_B}\n---\na: ${'['.repeat(20)}`,
    'pods.yaml': pods('server').split('---')[0]!,
  }, { documents: 5, nodes: 30, depth: 10 });
  assert.ok(model.workloadByUid('uid-a'), 'the other file applies');
  assert.equal(model.workloadByUid('uid-b'), undefined, 'nothing of a refused file applies');
  const byFile = new Map(rejections(model, dir).map(([file, object, reason]) => [file, `${object}: ${reason}`]));
  assert.match(byFile.get('documents.yaml')!, /^file: more than 5 YAML documents, over the cap per file/);
  assert.match(byFile.get('nodes.yaml')!, /^file: a document with more than 30 YAML nodes \(line 9, column \d+\), over the cap per document/);
  assert.match(byFile.get('nesting.yaml')!, /^file: nested more than 10 levels deep \(line 9, column \d+\), over the cap/);
  assert.equal(byFile.size, 3);
});

test('an edit that puts a file over a cap leaves its last good read in effect; fixing it clears the rejection', async (t) => {
  const { dir, model } = await setup(t, { 'pods.yaml': pods('server') }, { bytes: 4096 });
  const refused = until(() => model.rejected().some((r) => r.object === 'file'));
  await writeFile(join(dir, 'pods.yaml'), pods('canary') + '#'.repeat(4096));
  await refused;
  assert.deepEqual(rejections(model, dir).filter(([, object]) => object === 'file'), [['pods.yaml', 'file', `${4096 + pods('canary').length} bytes, over the cap of 4096 bytes per file: split it into smaller files`]]);
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'server', 'the last good read stays');
  const fixed = nextDelta(model);
  await writeFile(join(dir, 'pods.yaml'), pods('canary'));
  await fixed;
  assert.equal(model.workloadByUid('uid-a')!.labels.app, 'canary');
  assert.ok(!model.rejected().some((r) => r.object === 'file'));
});

test('a duplicate key, an alias inside its own anchor, aliases that expand too far or lead nowhere refuse that document alone', async (t) => {
  const { dir, model } = await setup(t, {
    'docs.yaml': [
      'apiVersion: v1\nkind: Pod\nkind: Service\nmetadata: { name: dup }',
      'apiVersion: v1\nkind: Pod\nmetadata: { name: cycle }\nspec: &s { containers: [ *s ] }',
      `apiVersion: v1\nkind: Pod\nmetadata: { name: wide }\nlist: &l [${'x,'.repeat(20)}]\nmore: [*l, *l, *l, *l, *l]`,
      'apiVersion: v1\nkind: Pod\nmetadata: { name: *nowhere }',
      POD_B,
    ].join('\n---\n'),
  }, { nodes: 60 });
  assert.ok(model.workloadByUid('uid-b'), 'the good document of the same file applies');
  assert.deepEqual(rejections(model, dir).map(([, object, reason]) => `${object}: ${reason}`), [
    'doc #1: not valid YAML: the key "kind" appears twice in one mapping (line 3, column 1)',
    'doc #2: its aliases expand it past 60 YAML nodes, over the cap per document (or an alias refers to a node that contains it)',
    'doc #3: its aliases expand it past 60 YAML nodes, over the cap per document (or an alias refers to a node that contains it)',
    'doc #4: not valid YAML: Unresolved alias (the anchor must be set before the alias): nowhere',
  ]);
});

test('a FIFO or a directory named *.yaml is refused, not waited on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-files-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  execFileSync('mkfifo', [join(dir, 'fifo.yaml')]);
  await mkdir(join(dir, 'dir.yaml'));
  await writeFile(join(dir, 'pods.yaml'), POD_B);
  const model = new MeshModel();
  const source = new FileSource(dir);
  t.after(() => source.stop());
  await source.start(model);
  await model.whenSynced();
  assert.ok(model.workloadByUid('uid-b'));
  assert.deepEqual(rejections(model, dir), [['dir.yaml', 'file', 'not a regular file'], ['fifo.yaml', 'file', 'not a regular file']]);
});

test('the same object twice in one file: the first document applies, the later one is listed naming it', async (t) => {
  const { dir, model } = await setup(t, { 'pods.yaml': `${POD_B}\n---\n${POD_B.replace('node-2', 'node-3')}` });
  assert.equal(model.workloadByUid('uid-b')!.node, 'node-2');
  assert.deepEqual(rejections(model, dir), [['pods.yaml', 'doc #2', 'Pod demo/b is already defined by doc #1 of this file: that definition applies and this one is ignored']]);
});

test('a deleted file takes its rejections with it', async (t) => {
  const { dir, model } = await setup(t, { 'broken.yaml': 'kind: [', 'pods.yaml': POD_B });
  assert.equal(model.rejected().length, 1);
  await unlink(join(dir, 'broken.yaml'));
  await until(() => model.rejected().length === 0);
  assert.ok(model.workloadByUid('uid-b'));
});
