import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as x509 from './x509.ts';
import { CertificateAuthority } from './ca.ts';
import { DirCaStore } from './ca-dir-store.ts';
import { InvalidObjectError } from '../core/errors.ts';

const crypto = webcrypto as unknown as Crypto;
const CLIENT = 'spiffe://cluster.local/ns/demo/sa/client';
const SERVER = 'spiffe://cluster.local/ns/demo/sa/server';

async function csr(names: x509.JsonGeneralName[], algorithm: EcKeyGenParams | RsaHashedKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }): Promise<string> {
  const keys = await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const signingAlgorithm = algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : algorithm;
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm,
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names, true)] : [],
  });
  return req.toString('pem');
}

function leafOf(chainPem: string): X509Certificate {
  return new X509Certificate(chainPem);
}

async function rejects(promise: Promise<unknown>, field: string, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, `expected InvalidObjectError, got ${String(err)}`);
    assert.equal(err.object, 'CSR #3');
    assert.equal(err.field, field);
    assert.match(err.message, pattern);
    return true;
  });
}

test('signCsr issues a 24 h leaf with the SPIFFE SAN that verifies against the root', async () => {
  const ca = await CertificateAuthority.create();
  const { identity, chainPem } = await ca.signCsr(await csr([{ type: 'url', value: CLIENT }]));
  assert.equal(identity, CLIENT);
  const leaf = leafOf(chainPem);
  const root = new X509Certificate(ca.rootPem);
  assert.equal(leaf.subjectAltName, `URI:${CLIENT}`);
  assert.ok(leaf.verify(root.publicKey), 'leaf is signed by the root');
  assert.ok(leaf.checkIssued(root));
  assert.equal(leaf.ca, false);
  assert.deepEqual(leaf.keyUsage.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  const lifetimeH = (Date.parse(leaf.validTo) - Date.now()) / 3600_000;
  assert.ok(lifetimeH > 23.9 && lifetimeH <= 24, `24 h lifetime, got ${lifetimeH}`);
  assert.ok(chainPem.endsWith(ca.rootPem), 'chain ends with the root');
  const parsed = new x509.X509Certificate(chainPem);
  const ski = parsed.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = parsed.getExtension(x509.AuthorityKeyIdentifierExtension);
  const rootSki = new x509.X509Certificate(ca.rootPem).getExtension(x509.SubjectKeyIdentifierExtension);
  assert.ok(ski?.keyId);
  assert.equal(aki?.keyId, rootSki?.keyId);
});

test('signCsr honours a custom TTL', async () => {
  const ca = await CertificateAuthority.create();
  const { chainPem } = await ca.signCsr(await csr([{ type: 'url', value: CLIENT }]), 600);
  const lifetimeS = (Date.parse(leafOf(chainPem).validTo) - Date.now()) / 1000;
  assert.ok(lifetimeS > 590 && lifetimeS <= 600, `600 s lifetime, got ${lifetimeS}`);
});

test('signCsr refuses a DNS SAN, two SANs, no SAN, another trust domain and a non-workload URI', async () => {
  const ca = await CertificateAuthority.create();
  await rejects(ca.signCsr(await csr([{ type: 'dns', value: 'evil.example' }]), undefined, 3), 'subjectAltName', /URI SAN.*dns/);
  await rejects(ca.signCsr(await csr([{ type: 'url', value: CLIENT }, { type: 'url', value: SERVER }]), undefined, 3), 'subjectAltName', /exactly one.*found 2/);
  await rejects(ca.signCsr(await csr([{ type: 'url', value: CLIENT }, { type: 'dns', value: 'x.example' }]), undefined, 3), 'subjectAltName', /exactly one/);
  await rejects(ca.signCsr(await csr([]), undefined, 3), 'subjectAltName', /found 0/);
  await rejects(ca.signCsr(await csr([{ type: 'url', value: 'spiffe://other.org/ns/demo/sa/client' }]), undefined, 3), 'subjectAltName', /"other\.org".*"cluster\.local"/);
  await rejects(ca.signCsr(await csr([{ type: 'url', value: 'spiffe://cluster.local/agent' }]), undefined, 3), 'subjectAltName', /not a workload SPIFFE ID/);
});

test('signCsr refuses a bad signature, a non-P-256 key and garbage', async () => {
  const ca = await CertificateAuthority.create();
  const good = await csr([{ type: 'url', value: CLIENT }]);
  const der = Buffer.from(x509.PemConverter.decodeFirst(good));
  der[der.length - 5] = der[der.length - 5]! ^ 0xff;
  const tampered = x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
  await rejects(ca.signCsr(tampered, undefined, 3), 'signature', /does not verify/);
  const rsa = await csr([{ type: 'url', value: CLIENT }], { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
  await rejects(ca.signCsr(rsa, undefined, 3), 'publicKey', /EC P-256.*RSASSA/);
  const p384 = await csr([{ type: 'url', value: CLIENT }], { name: 'ECDSA', namedCurve: 'P-384' });
  await rejects(ca.signCsr(p384, undefined, 3), 'publicKey', /P-384/);
  await rejects(ca.signCsr('not a csr', undefined, 3), 'pem', /PKCS#10/);
});

test('issued workload and serving certificates complete a real mutual TLS handshake', async (t) => {
  const ca = await CertificateAuthority.create();
  const serving = await ca.issueServingCert(['127.0.0.1', 'localhost']);
  const client = await ca.issueWorkloadCert(CLIENT);
  assert.match(client.keyPem, /^-----BEGIN PRIVATE KEY-----/);
  assert.match(serving.keyPem, /^-----BEGIN PRIVATE KEY-----/);
  assert.equal(leafOf(serving.chainPem).subjectAltName, 'IP Address:127.0.0.1, DNS:localhost');

  const server = tls.createServer({ key: serving.keyPem, cert: serving.chainPem, ca: ca.rootPem, requestCert: true, rejectUnauthorized: true }, (socket) => {
    socket.end(socket.getPeerX509Certificate()?.subjectAltName ?? '');
  });
  t.after(() => server.close());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const socket = tls.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, key: client.keyPem, cert: client.chainPem, ca: ca.rootPem });
  t.after(() => socket.destroy());
  await once(socket, 'secureConnect');
  let received = '';
  for await (const chunk of socket) received += chunk;
  assert.equal(received, `URI:${CLIENT}`);
});

test('issueWorkloadCert refuses an identity of another trust domain', async () => {
  const ca = await CertificateAuthority.create({ trustDomain: 'example.org' });
  await assert.rejects(ca.issueWorkloadCert(CLIENT), /trust domain is not this mesh's "example.org"/);
  const ok = await ca.issueWorkloadCert('spiffe://example.org/ns/a/sa/b');
  assert.equal(leafOf(ok.chainPem).subjectAltName, 'URI:spiffe://example.org/ns/a/sa/b');
});

test('DirCaStore persists one root (key mode 0600) and racing creators agree on it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-ca-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const caDir = join(dir, 'ca');
  const [a, b, c] = await Promise.all([
    CertificateAuthority.loadOrCreate(new DirCaStore(caDir)),
    CertificateAuthority.loadOrCreate(new DirCaStore(caDir)),
    CertificateAuthority.loadOrCreate(new DirCaStore(caDir)),
  ]);
  assert.equal(a.rootPem, b.rootPem);
  assert.equal(a.rootPem, c.rootPem);
  const store = new DirCaStore(caDir);
  assert.equal((await stat(store.keyPath)).mode & 0o777, 0o600);
  const again = await CertificateAuthority.loadOrCreate(store);
  assert.equal(again.rootPem, a.rootPem);
  // A certificate from the reloaded CA verifies against the first instance's root.
  const leaf = leafOf((await again.issueWorkloadCert(SERVER)).chainPem);
  assert.ok(leaf.verify(new X509Certificate(a.rootPem).publicKey));
});

test('a CA key that does not match its certificate is refused with what to check', async () => {
  const one = await CertificateAuthority.create();
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-ca-'));
  try {
    const store = new DirCaStore(dir);
    await CertificateAuthority.loadOrCreate(store);
    const stored = await store.load();
    assert.ok(stored);
    await assert.rejects(CertificateAuthority.fromPem({ keyPem: stored.keyPem, certPem: one.rootPem }), /does not match the CA certificate/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
