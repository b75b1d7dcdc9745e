import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FakeApiServer } from './testdata/fake-api-server.ts';
import { SecretCaStore } from './ca-secret-store.ts';
import { CertificateAuthority } from './ca.ts';

const NS = 'nodemesh-system';

async function setup(t: TestContext): Promise<FakeApiServer> {
  const fake = await FakeApiServer.start();
  t.after(() => fake.stop());
  return fake;
}

const secretData = (fake: FakeApiServer): Record<string, string> => {
  const data = fake.get('Secret', NS, 'nodemesh-ca')?.data as Record<string, string>;
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
};
const bundle = (fake: FakeApiServer): string | undefined => (fake.get('ConfigMap', NS, 'nodemesh-trust-bundle')?.data as Record<string, string> | undefined)?.['ca.crt'];

test('fake API server: the first root is stored in an immutable Secret and published in the trust-bundle ConfigMap', async (t) => {
  const fake = await setup(t);
  const store = new SecretCaStore(fake.kubeConfig(), { namespace: NS });
  assert.equal(await store.load(), null);
  const pair = { keyPem: 'KEY-A', certPem: 'CERT-A' };
  assert.deepEqual(await store.saveIfAbsent(pair), pair);
  assert.deepEqual(secretData(fake), { 'ca.key': 'KEY-A', 'ca.crt': 'CERT-A' });
  assert.equal(fake.get('Secret', NS, 'nodemesh-ca')?.immutable, true);
  assert.equal(bundle(fake), 'CERT-A');
  assert.deepEqual(await new SecretCaStore(fake.kubeConfig(), { namespace: NS }).load(), pair, 'a restarted control plane loads the same root');
});

test('fake API server: two replicas creating a CA at once end up with one root', async (t) => {
  const fake = await setup(t);
  const [a, b] = await Promise.all([
    CertificateAuthority.loadOrCreate(new SecretCaStore(fake.kubeConfig(), { namespace: NS })),
    CertificateAuthority.loadOrCreate(new SecretCaStore(fake.kubeConfig(), { namespace: NS })),
  ]);
  assert.equal(a.rootPem, b.rootPem);
  assert.equal(secretData(fake)['ca.crt'], a.rootPem);
  assert.equal(bundle(fake), a.rootPem);
});

test('fake API server: two stores saving different roots at once both return the one that was stored', async (t) => {
  const fake = await setup(t);
  const [a, b] = await Promise.all([
    new SecretCaStore(fake.kubeConfig(), { namespace: NS }).saveIfAbsent({ keyPem: 'KEY-A', certPem: 'CERT-A' }),
    new SecretCaStore(fake.kubeConfig(), { namespace: NS }).saveIfAbsent({ keyPem: 'KEY-B', certPem: 'CERT-B' }),
  ]);
  assert.deepEqual(a, b);
  assert.deepEqual(secretData(fake), { 'ca.key': a.keyPem, 'ca.crt': a.certPem });
  assert.equal(bundle(fake), a.certPem);
  assert.equal(fake.requests({ method: 'POST', path: `/api/v1/namespaces/${NS}/secrets` }), 2, 'both tried to create; one got 409');
});

test('fake API server: an operator-supplied CA Secret is used as is and never overwritten; a stale trust bundle is updated', async (t) => {
  const fake = await setup(t);
  fake.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'nodemesh-ca', namespace: NS }, type: 'Opaque', data: { 'ca.key': Buffer.from('OPERATOR-KEY').toString('base64'), 'ca.crt': Buffer.from('OPERATOR-CERT').toString('base64') } });
  fake.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'nodemesh-trust-bundle', namespace: NS, labels: { team: 'platform' } }, data: { 'ca.crt': 'OLD-CERT' } });
  const store = new SecretCaStore(fake.kubeConfig(), { namespace: NS });
  assert.deepEqual(await store.load(), { keyPem: 'OPERATOR-KEY', certPem: 'OPERATOR-CERT' });
  assert.deepEqual(await store.saveIfAbsent({ keyPem: 'KEY-B', certPem: 'CERT-B' }), { keyPem: 'OPERATOR-KEY', certPem: 'OPERATOR-CERT' });
  assert.deepEqual(secretData(fake), { 'ca.key': 'OPERATOR-KEY', 'ca.crt': 'OPERATOR-CERT' });
  const cm = fake.get('ConfigMap', NS, 'nodemesh-trust-bundle')!;
  assert.equal(bundle(fake), 'OPERATOR-CERT');
  assert.deepEqual((cm.metadata.labels as Record<string, string>), { team: 'platform' }, 'the rest of the ConfigMap is kept');
});

test('fake API server: a CA Secret without ca.key is an error naming the Secret and the key', async (t) => {
  const fake = await setup(t);
  fake.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'nodemesh-ca', namespace: NS }, type: 'kubernetes.io/tls', data: { 'tls.key': 'eA==', 'tls.crt': 'eA==' } });
  await assert.rejects(new SecretCaStore(fake.kubeConfig(), { namespace: NS }).load(), { code: 'NM_BAD_CA', message: /^Secret nodemesh-system\/nodemesh-ca: data\.ca\.key is missing: the Secret must hold the CA key as ca\.key/ });
});
