import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { updateFromWire } from '../core/wire.ts';
import { createBackends } from './backends.ts';
import { CertificateAuthority } from './ca.ts';
import { startControlPlane } from './server.ts';
import { FakeApiServer } from './testdata/fake-api-server.ts';
import { firstWatchMessage } from '../testdata/watch-client.ts';

test('kubernetes backends against a fake API server: CA in a Secret, TokenReview, informers, the Service name in the serving certificate', async (t) => {
  const fake = await FakeApiServer.start();
  t.after(() => fake.stop());
  fake.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } } });
  fake.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-web-1' }, spec: { nodeName: 'node-a', serviceAccountName: 'web', containers: [{ name: 'web' }] }, status: { podIP: '10.0.0.5', phase: 'Running' } });
  fake.addToken('node-a-token', { username: 'system:serviceaccount:nodemesh-system:nodemesh-node', audiences: ['nodemesh'], extra: { 'authentication.kubernetes.io/node-name': ['node-a'] } });

  const backends = createBackends({ kind: 'kubernetes', kubeConfig: fake.kubeConfig(), namespace: 'nodemesh-system' });
  assert.equal(backends.caStore.describe, 'Secret nodemesh-system/nodemesh-ca');
  const ca = await CertificateAuthority.loadOrCreate(backends.caStore, { trustDomain: 'cluster.local' });
  const cp = await startControlPlane({ source: backends.source, listen: '127.0.0.1:0', ca, authenticator: backends.authenticator, servingHosts: backends.servingHosts });
  t.after(() => cp.stop());
  const secret = fake.get('Secret', 'nodemesh-system', 'nodemesh-ca') as { data: Record<string, string> } | undefined;
  assert.ok(secret, 'the CA root is stored in Secret nodemesh-system/nodemesh-ca');
  const caPem = Buffer.from(secret.data['ca.crt']!, 'base64');
  const bundle = fake.get('ConfigMap', 'nodemesh-system', 'nodemesh-trust-bundle') as { data: Record<string, string> } | undefined;
  assert.equal(bundle?.data['ca.crt'], caPem.toString(), 'the trust bundle the DaemonSet mounts holds the same root');

  // The nodes dial the Service name, which the serving certificate must carry.
  const message = await firstWatchMessage(cp.address, caPem, 'node-a', 'node-a-token', 'nodemesh-controlplane.nodemesh-system.svc');
  const { update } = updateFromWire(message);
  const workloads = update.upserts.filter((r) => r.kind === 'workload');
  assert.deepEqual(workloads.map((r) => r.kind === 'workload' && `${r.workload.namespace}/${r.workload.name} ${r.workload.enrolled}`), ['shop/web-1 true']);

  await assert.rejects(firstWatchMessage(cp.address, caPem, 'node-a', 'not-a-known-token', 'nodemesh-controlplane.nodemesh-system.svc'), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED);
});
