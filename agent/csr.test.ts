import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPublicKey, createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCsr } from '../testdata/mesh-ca.ts';
import { generateKeyAndCsr } from './csr.ts';

const IDENTITY = 'spiffe://cluster.local/ns/shop/sa/checkout';

test('csr: a PKCS#10 request that OpenSSL verifies, with the identity as its one critical URI SAN', async (t) => {
  const { csrPem, keyPem, publicKeySpki } = await generateKeyAndCsr(IDENTITY);
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-csr-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'req.pem'), csrPem);
  const text = execFileSync('openssl', ['req', '-in', join(dir, 'req.pem'), '-noout', '-verify', '-text'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  assert.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/checkout\s/);
  assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  assert.match(text, /NIST CURVE: P-256/);
  // The key in the request is the node's key, and the PEM private key is its pair.
  assert.deepEqual(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' }), publicKeySpki);
});

test('csr: the control plane\'s X.509 library reads the same request: signature, key and SAN', async () => {
  const { csrPem, publicKeySpki } = await generateKeyAndCsr(IDENTITY);
  const csr = await readCsr(csrPem);
  assert.equal(csr.verifies, true);
  assert.deepEqual(csr.publicKeySpki, publicKeySpki);
  const san = csr.san;
  assert.ok(san, 'the request carries a SAN extension');
  assert.equal(san.critical, true);
  assert.deepEqual(san.names, [['url', IDENTITY]]);
  assert.equal(csr.subject, '');
});

test('csr: long identities need multi-byte DER lengths and still verify', async () => {
  const long = `spiffe://cluster.local/ns/${'n'.repeat(63)}/sa/${'s'.repeat(200)}`;
  const csr = await readCsr((await generateKeyAndCsr(long)).csrPem);
  assert.equal(csr.verifies, true);
  assert.ok(csr.san, 'the request carries a SAN extension');
  assert.deepEqual(csr.san.names.map(([, value]) => value), [long]);
});

test('csr: an identity that is not printable ASCII is refused, naming it', async () => {
  await assert.rejects(generateKeyAndCsr('spiffe://cluster.local/ns/é/sa/x'), /identity "spiffe:\/\/cluster\.local\/ns\/é\/sa\/x" is not a printable ASCII URI/);
});
