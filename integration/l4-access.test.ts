// End-to-end access control on a real two-node mesh: AuthorizationPolicy and the
// namespace's mTLS mode, edited live in the control plane's config dir, and the
// HBONE port refusing peers that cannot prove a mesh identity. Needs root; fails
// (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../controlplane/ca.ts';
import type { KubeObject } from '../controlplane/source.ts';
import { namespaceObject, writeObject } from './cluster/config-dir.ts';
import type { ClusterSpec, NamespaceSpec } from './cluster/plan.ts';
import { openConnection } from './cluster/servers.ts';
import { adminGet, startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, probeHbone, startLoggedGreeter, type LoggedGreeter, type ProbeCredentials } from './e2e/pod-apps.ts';
import { waitUntil } from './e2e/wait-until.ts';

const PORT = 7000;
const CLIENT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/client';
const SHOP: NamespaceSpec = { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } };

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [SHOP],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'server-a', namespace: 'shop', node: 'n2', labels: { app: 'server' }, serviceAccount: 'server' },
    { name: 'outsider', namespace: 'legacy', node: 'n1' },
  ],
};

let fx: MeshFixture;
let server: LoggedGreeter;

before(async () => {
  fx = await startMeshFixture(SPEC, 'access');
  server = await startLoggedGreeter(fx.cluster, 'shop/server-a', PORT);
});
after(() => fx?.teardown());

const serverIp = () => fx.cluster.pod('shop/server-a').ip;
const request = (from: string, text: string) => attempt(fx.cluster, from, serverIp(), PORT, text);

interface LocalWorkload { name: string; mtlsMode: string }

async function mtlsModeOnN2(): Promise<string | undefined> {
  return (await adminGet<LocalWorkload[]>(fx.cluster, 'n2', '/workloads')).find((w) => w.name === 'server-a')?.mtlsMode;
}

async function setShopMtlsMode(mode: 'strict' | 'permissive'): Promise<void> {
  await writeObject(fx.configDir, namespaceObject({ ...SHOP, annotations: { ...SHOP.annotations, 'nodemesh.io/mtls-mode': mode } }));
  await waitUntil(`n2 to see namespace shop as ${mode}`, async () => (await mtlsModeOnN2()) === mode);
}

test(cniTitle('an ALLOW policy naming another principal refuses the client\'s new connections and closes its open one; deleting it restores access'), async (t) => {
  assert.equal(await expectAnswer(await request('shop/client', 'before'), 'client -> server-a before the policy', fx.mesh), 'hello from server-a\nbefore');
  const open = await openConnection(fx.cluster, fx.cluster.pod('shop/client').netns, serverIp(), PORT);
  t.after(() => open.close());
  await open.roundTrip('open before the policy');

  const policy: KubeObject = {
    apiVersion: 'security.nodemesh.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'admin-only', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'server' } },
      action: 'ALLOW',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/admin'] } }] }],
    },
  };
  const file = await writeObject(fx.configDir, policy);
  t.after(() => rm(file, { force: true }));
  const policyOnN2 = async () => (await adminGet<{ name: string }[]>(fx.cluster, 'n2', '/policies')).some((p) => p.name === 'admin-only');
  await waitUntil('n2 to receive policy shop/admin-only', policyOnN2);

  await waitUntil('the connection opened before the policy to be closed', () => open.process.exitStatus !== undefined, 5000);
  const acceptedBefore = server.accepted();
  const refused = await request('shop/client', 'after');
  assert.equal(refused.ok, false, `a new connection got through: ${JSON.stringify(refused.output)}`);
  assert.equal(refused.output, '');
  assert.equal(server.accepted(), acceptedBefore, 'the refused connection must not reach server-a');

  await rm(file);
  await waitUntil('n2 to drop policy shop/admin-only', async () => !(await policyOnN2()));
  assert.equal(await expectAnswer(await request('shop/client', 'again'), 'client -> server-a after deleting the policy', fx.mesh), 'hello from server-a\nagain');
});

test(cniTitle('a pod outside the mesh reaches an enrolled pod in permissive mode, and strict mode refuses it and closes its open connection'), async (t) => {
  assert.equal(await mtlsModeOnN2(), 'permissive', 'permissive is the default');
  assert.equal(await expectAnswer(await request('legacy/outsider', 'plain'), 'outsider -> server-a in permissive mode', fx.mesh), 'hello from server-a\nplain');
  const open = await openConnection(fx.cluster, fx.cluster.pod('legacy/outsider').netns, serverIp(), PORT);
  t.after(() => open.close());
  await open.roundTrip('open before strict');

  t.after(() => setShopMtlsMode('permissive'));
  await setShopMtlsMode('strict');
  await waitUntil('the plaintext connection opened before strict mode to be closed', () => open.process.exitStatus !== undefined, 5000);
  const acceptedBefore = server.accepted();
  const refused = await request('legacy/outsider', 'strict');
  assert.equal(refused.ok, false, `plaintext got through in strict mode: ${JSON.stringify(refused.output)}`);
  assert.equal(server.accepted(), acceptedBefore, 'the refused connection must not reach server-a');
  // Strict refuses plaintext only: the enrolled client still gets in over HBONE.
  assert.equal(await expectAnswer(await request('shop/client', 'meshed'), 'client -> server-a in strict mode', fx.mesh), 'hello from server-a\nmeshed');

  await setShopMtlsMode('permissive');
  assert.equal(await expectAnswer(await request('legacy/outsider', 'back'), 'outsider -> server-a after strict mode is lifted', fx.mesh), 'hello from server-a\nback');
});

test(cniTitle('an enrolled pod\'s HBONE port refuses a peer with no client certificate, with another CA\'s certificate, or in plaintext; nothing reaches the pod'), async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-e2e-certs-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const credentials = async (name: string, ca: CertificateAuthority): Promise<ProbeCredentials> => {
    const issued = await ca.issueWorkloadCert(CLIENT_IDENTITY);
    const creds = { certFile: join(dir, `${name}-cert.pem`), keyFile: join(dir, `${name}-key.pem`) };
    await writeFile(creds.certFile, issued.chainPem);
    await writeFile(creds.keyFile, issued.keyPem, { mode: 0o600 });
    return creds;
  };
  // Claims the client's identity, signed by a root the mesh does not trust.
  const foreign = await credentials('foreign', await CertificateAuthority.create());
  const authority = `${serverIp()}:${PORT}`;
  const probe = (mode: 'tls' | 'plaintext', creds?: ProbeCredentials) => probeHbone(fx.cluster, 'legacy/outsider', serverIp(), authority, mode, creds);

  const acceptedBefore = server.accepted();
  const attempts = { 'no client certificate': await probe('tls'), 'another CA': await probe('tls', foreign), plaintext: await probe('plaintext') };
  for (const [what, result] of Object.entries(attempts)) {
    assert.notEqual(result.status, 200, `${what}: the tunnel was opened: ${JSON.stringify(result)}`);
    assert.equal(result.reply, '', `${what}: data came back: ${JSON.stringify(result)}`);
  }
  assert.equal(server.accepted(), acceptedBefore, 'a refused peer must not reach server-a');

  // A certificate of the mesh's own root that claims another workload's address as its source.
  const meshCa = await CertificateAuthority.fromPem({ keyPem: await readFile(join(fx.mesh.caDir, 'ca-key.pem'), 'utf8'), certPem: await readFile(fx.mesh.caFile, 'utf8') });
  const meshCreds = await credentials('genuine', meshCa);
  const lying = await probe('tls', { ...meshCreds, forwardedFor: fx.cluster.pod('legacy/outsider').ip });
  assert.equal(lying.status, 400, `a Forwarded source of another identity must be refused: ${JSON.stringify(lying)}`);
  assert.equal(server.accepted(), acceptedBefore);

  // The control: the same certificate, speaking for a pod of its identity as a source node
  // does, gets through, so the refusals above are the HBONE port's doing.
  const genuine = await probe('tls', { ...meshCreds, forwardedFor: fx.cluster.pod('shop/client').ip });
  assert.equal(genuine.status, 200, `a mesh certificate must open the tunnel: ${JSON.stringify(genuine)}`);
  assert.equal(genuine.reply, 'hello from server-a\nprobe\n');
  assert.equal(server.accepted(), acceptedBefore + 1);
});
