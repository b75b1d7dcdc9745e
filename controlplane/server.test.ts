import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { X509Certificate, webcrypto } from 'node:crypto';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkServerIdentity } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as x509 from './x509.ts';
import { CONTROL_PLANE_TLS_NAME, meshService, type WireUpdate } from '../core/wire.ts';
import { CertificateAuthority } from './ca.ts';
import { FileSource } from './file-source.ts';
import { FileTokenAuthenticator } from './node-auth.ts';
import { startControlPlane, type RunningControlPlane } from './server.ts';

const crypto = webcrypto as unknown as Crypto;
const TOKENS = { 'node-1': '0123456789abcdef0123456789abcdef', 'node-2': 'fedcba9876543210fedcba9876543210' };
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';
const SERVER_ID = 'spiffe://cluster.local/ns/demo/sa/server';

const YAML = (serverLabel: string) => `
apiVersion: v1
kind: Namespace
metadata: { name: demo, annotations: { nodemesh.io/mesh: enabled } }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: demo, uid: uid-client }
spec: { nodeName: node-1, serviceAccountName: client }
status: { podIP: 10.244.1.10 }
---
apiVersion: v1
kind: Pod
metadata: { name: server-a, namespace: demo, uid: uid-server-a, labels: { app: ${serverLabel} } }
spec: { nodeName: node-2, serviceAccountName: server }
status: { podIP: 10.244.2.10 }
`;

interface MeshClient extends grpc.Client {
  Watch(request: { node: string; epoch?: string; version?: number }, metadata: grpc.Metadata): grpc.ClientReadableStream<WireUpdate>;
  Sign(request: { csrs: string[] }, metadata: grpc.Metadata, callback: (err: grpc.ServiceError | null, res?: { certificates: { identity: string; certChain: string }[]; trustBundle: string }) => void): void;
}

async function setup(t: TestContext): Promise<{ cp: RunningControlPlane; dir: string; client: MeshClient }> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-cp-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'mesh.yaml'), YAML('server'));
  const cp = await startControlPlane({
    source: new FileSource(dir),
    listen: '127.0.0.1:0',
    ca: await CertificateAuthority.create(),
    authenticator: new FileTokenAuthenticator(TOKENS),
  });
  t.after(() => cp.stop());
  const Mesh = meshService();
  // The serving certificate is checked for the listen address, as grpc-js would
  // check it, but not sent that IP as the TLS ServerName (RFC 6066 forbids it;
  // Node warns): the name is the one the agent uses when it dials an IP address.
  const host = cp.address.slice(0, cp.address.lastIndexOf(':'));
  const credentials = grpc.credentials.createSsl(Buffer.from(cp.caPem), null, null, { checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert) });
  const client = new Mesh(cp.address, credentials, { 'grpc.ssl_target_name_override': CONTROL_PLANE_TLS_NAME }) as unknown as MeshClient;
  t.after(() => client.close());
  return { cp, dir, client };
}

function auth(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

function sign(client: MeshClient, token: string, csrs: string[]): Promise<{ certificates: { identity: string; certChain: string }[]; trustBundle: string }> {
  return new Promise((resolve, reject) => client.Sign({ csrs }, auth(token), (err, res) => (err ? reject(err) : resolve(res!))));
}

async function csrFor(identity: string): Promise<string> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' }, extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], true)],
  });
  return req.toString('pem');
}

/** Reads messages from a Watch stream one at a time. */
function reader(stream: grpc.ClientReadableStream<WireUpdate>) {
  const queue: WireUpdate[] = [];
  const waiters: ((m: WireUpdate) => void)[] = [];
  let failure: grpc.ServiceError | undefined;
  const failed: ((e: grpc.ServiceError) => void)[] = [];
  stream.on('data', (m: WireUpdate) => (waiters.length ? waiters.shift()!(m) : queue.push(m)));
  stream.on('error', (e: grpc.ServiceError) => {
    failure = e;
    for (const f of failed.splice(0)) f(e);
  });
  return {
    next(timeoutMs = 3000): Promise<WireUpdate> {
      if (queue.length) return Promise.resolve(queue.shift()!);
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no Watch message within ${timeoutMs} ms`)), timeoutMs);
        waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
        failed.push((e) => {
          clearTimeout(timer);
          reject(e);
        });
      });
    },
    error(): Promise<grpc.ServiceError> {
      if (failure) return Promise.resolve(failure);
      return new Promise((resolve) => failed.push(resolve));
    },
  };
}

test('unknown or missing tokens are UNAUTHENTICATED with what to check', async (t) => {
  const { client } = await setup(t);
  await assert.rejects(sign(client, 'not-a-known-token-at-all', [await csrFor(CLIENT_ID)]), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.UNAUTHENTICATED);
    assert.match(err.details, /unknown node token: check the token file/);
    return true;
  });
  const watch = reader(client.Watch({ node: 'node-1' }, new grpc.Metadata()));
  const err = await watch.error();
  assert.equal(err.code, grpc.status.UNAUTHENTICATED);
  assert.match(err.details, /missing "authorization: Bearer <token>"/);
});

test('Sign: own identities are signed; another node\'s identity is PERMISSION_DENIED; a bad CSR is INVALID_ARGUMENT', async (t) => {
  const { cp, client } = await setup(t);
  const res = await sign(client, TOKENS['node-1'], [await csrFor(CLIENT_ID)]);
  assert.equal(res.trustBundle, cp.caPem);
  assert.equal(res.certificates[0]!.identity, CLIENT_ID);
  const leaf = new X509Certificate(res.certificates[0]!.certChain);
  assert.equal(leaf.subjectAltName, `URI:${CLIENT_ID}`);
  assert.ok(leaf.verify(new X509Certificate(cp.caPem).publicKey));

  await assert.rejects(sign(client, TOKENS['node-2'], [await csrFor(SERVER_ID), await csrFor(CLIENT_ID)]), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /^node node-2 runs no pod with identity spiffe:\/\/cluster\.local\/ns\/demo\/sa\/client/);
    return true;
  });
  await assert.rejects(sign(client, TOKENS['node-2'], [await csrFor(SERVER_ID), await csrFor('spiffe://other.org/ns/demo/sa/server')]), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /^csrs\[1\]: subjectAltName: trust domain "other\.org"/);
    return true;
  });
  await assert.rejects(sign(client, TOKENS['node-2'], ['garbage']), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /^csrs\[0\]: pem: not a PEM PKCS#10/);
    return true;
  });
});

test('Watch: PERMISSION_DENIED for another node; snapshot, then a delta on a YAML edit; resume without a snapshot', async (t) => {
  const { cp, dir, client } = await setup(t);
  const foreign = reader(client.Watch({ node: 'node-2' }, auth(TOKENS['node-1'])));
  const denied = await foreign.error();
  assert.equal(denied.code, grpc.status.PERMISSION_DENIED);
  assert.match(denied.details, /token belongs to node "node-1" but Watch asks for node "node-2"/);

  const first = client.Watch({ node: 'node-1' }, auth(TOKENS['node-1']));
  const stream = reader(first);
  const snapshot = await stream.next();
  assert.equal(snapshot.snapshot, true);
  assert.equal(snapshot.epoch, cp.model.epoch);
  assert.deepEqual(snapshot.upserts.map((r) => `${r.id.kind}:${r.id.key}`).sort(), ['settings:mesh', 'workload:uid-client', 'workload:uid-server-a']);
  const serverA = snapshot.upserts.find((r) => r.id.key === 'uid-server-a')!;
  assert.equal(serverA.body, 'workload');
  assert.equal(serverA.workload!.enrolled, true);

  await writeFile(join(dir, 'mesh.yaml'), YAML('canary'));
  const delta = await stream.next();
  assert.equal(delta.snapshot, false);
  assert.deepEqual(delta.upserts.map((r) => r.id.key), ['uid-server-a']);
  assert.equal(delta.upserts[0]!.workload!.labels.app, 'canary');
  assert.equal(Number(delta.version), Number(snapshot.version) + 1);
  first.cancel();

  // Reconnect from the snapshot's version: only the missed delta comes, no snapshot.
  const resumed = reader(client.Watch({ node: 'node-1', epoch: snapshot.epoch, version: Number(snapshot.version) }, auth(TOKENS['node-1'])));
  const again = await resumed.next();
  assert.equal(again.snapshot, false);
  assert.equal(Number(again.version), Number(delta.version));
  assert.deepEqual(again.upserts.map((r) => r.id.key), ['uid-server-a']);

  // Up to date: an empty resume; from an unknown epoch: a snapshot.
  const current = reader(client.Watch({ node: 'node-1', epoch: snapshot.epoch, version: Number(delta.version) }, auth(TOKENS['node-1'])));
  const empty = await current.next();
  assert.equal(empty.snapshot, false);
  assert.deepEqual([empty.upserts.length, empty.removals.length], [0, 0]);
  const stale = reader(client.Watch({ node: 'node-1', epoch: 'an-old-epoch', version: 3 }, auth(TOKENS['node-1'])));
  assert.equal((await stale.next()).snapshot, true);
});

test('a listen address in use rejects start with the address', async (t) => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  t.after(() => blocker.close());
  const port = (blocker.address() as { port: number }).port;
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-cp-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await assert.rejects(startControlPlane({
    source: new FileSource(dir),
    listen: `127.0.0.1:${port}`,
    ca: await CertificateAuthority.create(),
    authenticator: new FileTokenAuthenticator(TOKENS),
  }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NM_BIND_FAILED');
    assert.match(err.message, new RegExp(`control API: cannot listen on 127\\.0\\.0\\.1:${port}`));
    return true;
  });
});
