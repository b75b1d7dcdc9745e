// What startMesh hands the real control plane: the config dir, read back through
// the control plane's own mesh model, and the node tokens, through its file
// authenticator. (Starting the processes is covered by the end-to-end tests.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { MeshModel } from '../../controlplane/mesh-model.ts';
import { FileTokenAuthenticator } from '../../controlplane/node-auth.ts';
import type { KubeObject } from '../../controlplane/source.ts';
import { Cluster } from './cluster.ts';
import { generateConfigDir } from './config-dir.ts';
import { Mesh } from './mesh.ts';
import { planCluster } from './plan.ts';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-config-dir-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const plan = () => planCluster({
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled', 'nodemesh.io/mtls-mode': 'strict' } }],
  pods: [
    { name: 'web-1', namespace: 'shop', node: 'n1', labels: { app: 'web' }, serviceAccount: 'web', ports: [{ name: 'http', port: 8080 }] },
    { name: 'web-2', namespace: 'shop', node: 'n2', labels: { app: 'web' }, serviceAccount: 'web', ports: [{ name: 'http', port: 8080 }] },
    { name: 'legacy', namespace: 'shop', node: 'n1', annotations: { 'nodemesh.io/mesh': 'disabled' } },
    { name: 'client', node: 'n2' },
  ],
  services: [{ name: 'web', namespace: 'shop', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] }],
}, 'nmcplan');

test('generateConfigDir writes YAML the control plane\'s model turns into the intended workloads and Service', async (t) => {
  const dir = tempDir(t);
  const p = plan();
  const written = await generateConfigDir(p, dir);
  assert.deepEqual(readdirSync(dir).sort(), written.map((w) => w.slice(dir.length + 1)).sort());
  assert.ok(written.some((w) => w.endsWith('pod-shop-web-1.yaml')));

  const model = new MeshModel();
  for (const file of written) model.upsert(parse(readFileSync(file, 'utf8')) as KubeObject, file);
  model.synced();
  await model.whenSynced();
  assert.deepEqual(model.rejected(), []);
  const snapshot = model.snapshotFor();
  const workloads = new Map(snapshot.upserts.flatMap((r) => (r.kind === 'workload' ? [[r.workload.name, r.workload]] : [])));
  const web1 = workloads.get('web-1')!;
  assert.equal(web1.ip, p.pods[0]!.ip);
  assert.equal(web1.node, 'n1');
  assert.equal(web1.uid, p.pods[0]!.uid);
  assert.equal(web1.serviceAccount, 'web');
  assert.equal(web1.enrolled, true);
  assert.equal(web1.mtlsMode, 'strict');
  assert.deepEqual(web1.namedPorts, { http: 8080 });
  assert.equal(workloads.get('legacy')!.enrolled, false, 'a pod annotation opts out of an enrolled namespace');
  assert.equal(workloads.get('client')!.enrolled, false);
  assert.equal(workloads.get('client')!.node, 'n2');

  const svc = snapshot.upserts.find((r) => r.kind === 'service');
  assert.ok(svc && svc.kind === 'service');
  assert.deepEqual(svc.service.vips, [p.services[0]!.clusterIP]);
  assert.deepEqual(svc.service.ports.map((port) => [port.port, port.targetPortName, port.appProtocol]), [[80, 'http', 'http']]);
  assert.deepEqual(svc.service.endpoints.map((e) => e.ip).sort(), [p.pods[0]!.ip, p.pods[1]!.ip].sort());
});

test('the mesh\'s node tokens are accepted by the control plane\'s file authenticator, one node each', async (t) => {
  const workDir = tempDir(t);
  const mesh = new Mesh(new Cluster(plan()), workDir, false, { configDir: join(workDir, 'config') });
  await mesh.writeTokens();
  const auth = FileTokenAuthenticator.fromFile(join(workDir, 'node-tokens'));
  for (const node of ['n1', 'n2']) {
    const token = readFileSync(mesh.tokenFile(node), 'utf8').trim();
    assert.equal(await auth.authenticate(token), node);
  }
});
