import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FakeApiServer } from './testdata/fake-api-server.ts';
import { TokenReviewAuthenticator } from './token-review-authenticator.ts';
import { NotAuthorizedError } from '../core/errors.ts';

const NODE_SA = 'system:serviceaccount:nodemesh-system:nodemesh-node';
const REVIEWS = { method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews' };

async function setup(t: TestContext): Promise<{ fake: FakeApiServer; auth: TokenReviewAuthenticator }> {
  const fake = await FakeApiServer.start();
  t.after(() => fake.stop());
  return { fake, auth: new TokenReviewAuthenticator(fake.kubeConfig()) };
}

function nodeAgentPod(fake: FakeApiServer, name: string, nodeName: string): string {
  const stored = fake.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'nodemesh-system' }, spec: { nodeName, serviceAccountName: 'nodemesh-node' } });
  return String(stored.metadata.uid);
}

async function refused(promise: Promise<string>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: Error) => {
    assert.ok(err instanceof NotAuthorizedError, `expected NotAuthorizedError, got ${err}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test('fake API server: a node token bound to a node authenticates as that node, and is cached', async (t) => {
  const { fake, auth } = await setup(t);
  fake.addToken('tok-node-a', { username: NODE_SA, audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/node-name': ['node-a'], 'authentication.kubernetes.io/pod-name': ['nodemesh-node-aaaaa'] } });
  assert.equal(await auth.authenticate('tok-node-a'), 'node-a');
  assert.equal(await auth.authenticate('tok-node-a'), 'node-a');
  assert.equal(fake.requests(REVIEWS), 1, 'the second call is answered from the cache');
});

test('fake API server: a token of another node\'s agent pod authenticates as that OTHER node (pod lookup before k8s 1.30)', async (t) => {
  const { fake, auth } = await setup(t);
  const uid = nodeAgentPod(fake, 'nodemesh-node-bbbbb', 'node-b');
  fake.addToken('tok-pod-b', { username: NODE_SA, audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/pod-name': ['nodemesh-node-bbbbb'], 'authentication.kubernetes.io/pod-uid': [uid] } });
  assert.equal(await auth.authenticate('tok-pod-b'), 'node-b', 'bound to node-b, so a caller on node-a cannot use it for node-a identities');
});

test('fake API server: an expired token is refused, telling to check the token file', async (t) => {
  const { fake, auth } = await setup(t);
  fake.addToken('tok-expired', { username: NODE_SA, audiences: ['nodemesh'], expired: true, extra: { 'authentication.kubernetes.io/node-name': ['node-a'] } });
  await refused(auth.authenticate('tok-expired'), /refused by the Kubernetes API server: .*invalidated.*--token-file/);
  await refused(auth.authenticate('never-issued'), /refused by the Kubernetes API server/);
});

test('fake API server: a token of a ServiceAccount other than nodemesh-node is refused', async (t) => {
  const { fake, auth } = await setup(t);
  fake.addToken('tok-web', { username: 'system:serviceaccount:shop:web', audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/node-name': ['node-a'] } });
  await refused(auth.authenticate('tok-web'), /belongs to "system:serviceaccount:shop:web", not system:serviceaccount:nodemesh-system:nodemesh-node.*serviceAccountName/);
});

test('fake API server: a token for another audience is refused, by the API server or, if it ignores audiences, by us', async (t) => {
  const { fake, auth } = await setup(t);
  fake.addToken('tok-apiserver', { username: NODE_SA, audiences: ['https://kubernetes.default.svc.cluster.local'], extra: { 'authentication.kubernetes.io/node-name': ['node-a'] } });
  await refused(auth.authenticate('tok-apiserver'), /token audiences .* is invalid for the target audiences .*nodemesh.*audience "nodemesh"/);
  fake.audienceAware = false;
  await refused(auth.authenticate('tok-apiserver'), /not confirmed for audience "nodemesh".*serviceAccountToken projection audience/);
});

test('fake API server: tokens bound to no pod, to a deleted pod or to an earlier pod of the same name are refused', async (t) => {
  const { fake, auth } = await setup(t);
  fake.addToken('tok-legacy', { username: NODE_SA, audiences: ['nodemesh'] });
  await refused(auth.authenticate('tok-legacy'), /not bound to a pod: mount a projected serviceAccountToken volume/);
  fake.addToken('tok-gone', { username: NODE_SA, audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/pod-name': ['nodemesh-node-gone'] } });
  await refused(auth.authenticate('tok-gone'), /pod nodemesh-system\/nodemesh-node-gone, which no longer exists/);
  nodeAgentPod(fake, 'nodemesh-node-ccccc', 'node-c');
  fake.addToken('tok-old-uid', { username: NODE_SA, audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/pod-name': ['nodemesh-node-ccccc'], 'authentication.kubernetes.io/pod-uid': ['0000-old'] } });
  await refused(auth.authenticate('tok-old-uid'), /earlier pod nodemesh-system\/nodemesh-node-ccccc \(uid 0000-old\): the token is stale/);
});
