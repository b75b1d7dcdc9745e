import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMeshCa, type MeshCa } from '../testdata/mesh-ca.ts';
import type { Workload } from '../core/types.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import { CertManager } from './cert-manager.ts';
import { CertCache } from './cert-cache.ts';
import type { Signer } from './cert-manager.ts';

let nextIp = 1;
function workload(uid: string, namespace: string, serviceAccount: string, node: string, enrolled = true): Workload {
  return {
    uid, namespace, name: uid, workloadName: uid, serviceAccount, node, ip: `10.0.0.${nextIp++}`,
    labels: {}, enrolled, mtlsMode: 'permissive', namedPorts: {},
  };
}

function storeWith(workloads: Workload[]): ConfigStore {
  const store = new ConfigStore('node-1');
  store.apply({
    epoch: 'e1', version: 1, snapshot: true, removals: [],
    upserts: workloads.map((w) => ({ kind: 'workload' as const, key: w.uid, version: 1, workload: w })),
  });
  return store;
}

const A = 'spiffe://cluster.local/ns/a/sa/x';
const B = 'spiffe://cluster.local/ns/b/sa/y';

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Signs with the real CA, counting calls and CSRs. */
function caSigner(ca: MeshCa, ttlSeconds?: number): Signer & { calls: number[] } {
  const calls: number[] = [];
  return {
    calls,
    async sign(csrs) {
      calls.push(csrs.length);
      const signed = await Promise.all(csrs.map((csr) => ca.signCsr(csr, ttlSeconds)));
      return { certificates: signed.map((s) => ({ identity: s.identity, certChain: s.chainPem })), trustBundle: ca.rootPem };
    },
  };
}

test('cert manager: one Sign call for the local enrolled identities only, keys match, dropped when the workload leaves', async (t) => {
  const ca = await createMeshCa();
  const store = storeWith([
    workload('p1', 'a', 'x', 'node-1'), workload('p2', 'a', 'x', 'node-1'), workload('p3', 'b', 'y', 'node-1'),
    workload('p4', 'c', 'z', 'node-1', false), workload('p5', 'd', 'w', 'node-2'),
  ]);
  const signer = caSigner(ca);
  const certs = new CertManager({ store, signer });
  t.after(() => certs.stop());
  certs.start();
  await until('certificates', () => certs.allIssued() && certs.status().length === 2 && certs.status().every((s) => s.state === 'valid'));
  assert.deepEqual(signer.calls, [2]);
  assert.deepEqual(certs.status().map((s) => s.identity).sort(), [A, B]);
  for (const id of [A, B]) {
    const cert = certs.certFor(id)!;
    assert.ok(new X509Certificate(cert.chainPem).checkPrivateKey(createPrivateKey(cert.keyPem)), `key of ${id} matches its certificate`);
  }
  assert.equal(certs.trustBundle(), ca.rootPem);
  assert.deepEqual(certs.trustBundleFingerprints(), [new X509Certificate(ca.rootPem).fingerprint256]);

  let changes = 0;
  certs.onChange(() => changes++);
  store.apply({ epoch: 'e1', version: 2, snapshot: false, upserts: [], removals: [{ kind: 'workload', key: 'p3' }] });
  assert.equal(certs.certFor(B), undefined);
  assert.deepEqual(certs.status().map((s) => s.identity), [A]);
  assert.equal(changes, 1);
});

test('cert manager: discards a certificate whose SAN is not the identity asked for, and retries', async (t) => {
  const ca = await createMeshCa();
  const store = storeWith([workload('p1', 'a', 'x', 'node-1')]);
  let calls = 0;
  // A control plane that answers with another identity's certificate under the asked name.
  const wrongSan: Signer = {
    async sign() {
      calls++;
      const other = await ca.issueWorkloadCert('spiffe://cluster.local/ns/other/sa/intruder');
      return { certificates: [{ identity: A, certChain: other.chainPem }], trustBundle: ca.rootPem };
    },
  };
  const certs = new CertManager({ store, signer: wrongSan });
  t.after(() => certs.stop());
  certs.start();
  await until('a retry after the bad answer', () => calls >= 2);
  assert.equal(certs.certFor(A), undefined);
  const [status] = certs.status();
  assert.equal(status!.state, 'failed');
  assert.match(status!.lastError!, /URI SAN is \["spiffe:\/\/cluster.local\/ns\/other\/sa\/intruder"\], expected exactly/);
});

test('cert manager: discards a certificate for the right identity but another key', async (t) => {
  const ca = await createMeshCa();
  const store = storeWith([workload('p1', 'a', 'x', 'node-1')]);
  const otherKey: Signer = {
    async sign() {
      const issued = await ca.issueWorkloadCert(A);
      return { certificates: [{ identity: A, certChain: issued.chainPem }], trustBundle: ca.rootPem };
    },
  };
  const certs = new CertManager({ store, signer: otherKey });
  t.after(() => certs.stop());
  certs.start();
  await until('the answer to be checked', () => certs.status()[0]?.lastError !== null);
  assert.equal(certs.certFor(A), undefined);
  assert.match(certs.status()[0]!.lastError!, /different public key/);
});

test('cert manager: renews at half-life with a new key and serial', async (t) => {
  const ca = await createMeshCa();
  const store = storeWith([workload('p1', 'a', 'x', 'node-1')]);
  // X.509 times have whole seconds: 4 s keeps the half-life clearly ahead of now.
  const signer = caSigner(ca, 4);
  const certs = new CertManager({ store, signer });
  t.after(() => certs.stop());
  certs.start();
  await until('first certificate', () => certs.certFor(A) !== undefined);
  const first = certs.certFor(A)!;
  const firstSerial = certs.status()[0]!.serial;
  const renewAt = Date.parse(certs.status()[0]!.renewAt!);
  assert.ok(renewAt - Date.now() > 1000 && renewAt - Date.now() < 2300, `renewal ${renewAt - Date.now()} ms away, expected about 2 s`);
  await until('renewal', () => certs.status()[0]!.serial !== firstSerial, 4000);
  assert.notEqual(certs.certFor(A)!.keyPem, first.keyPem);
  assert.equal(signer.calls.length, 2);
});

test('cert manager: a failing Sign is retried with backoff until it succeeds', async (t) => {
  const ca = await createMeshCa();
  const store = storeWith([workload('p1', 'a', 'x', 'node-1')]);
  const real = caSigner(ca);
  let failures = 0;
  const flaky: Signer = {
    async sign(csrs) {
      if (failures < 2) {
        failures++;
        throw new Error('control plane unavailable');
      }
      return real.sign(csrs);
    },
  };
  const certs = new CertManager({ store, signer: flaky });
  t.after(() => certs.stop());
  certs.start();
  await until('certificate after two failures', () => certs.certFor(A) !== undefined);
  assert.equal(failures, 2);
  assert.equal(certs.status()[0]!.lastError, null);
});

test('cert manager: certificates kept in the cache serve after a restart while the control plane is down; the file is 0600', async (t) => {
  const ca = await createMeshCa();
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-certs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = storeWith([workload('p1', 'a', 'x', 'node-1')]);
  const first = new CertManager({ store, signer: caSigner(ca), cache: new CertCache(dir) });
  first.start();
  await until('the first certificate', () => first.certFor(A) !== undefined);
  first.stop();
  const issued = first.certFor(A)!;
  await until('the cache to be written', () => readdirSync(dir).includes('certificates.json'));
  assert.equal(statSync(join(dir, 'certificates.json')).mode & 0o777, 0o600);

  const down: Signer = { sign: async () => { throw new Error('control plane unreachable'); } };
  const restarted = new CertManager({ store, signer: down, cache: new CertCache(dir) });
  t.after(() => restarted.stop());
  assert.equal(restarted.certFor(A)?.chainPem, issued.chainPem, 'served at once, before any Sign call');
  assert.equal(restarted.certFor(A)?.keyPem, issued.keyPem);
  assert.equal(restarted.trustBundle(), ca.rootPem);
  assert.equal(restarted.allIssued(), true);
});

test('cert manager: a cache entry that names another identity, holds another key or is malformed is dropped, not served', async (t) => {
  const ca = await createMeshCa();
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-certs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const a = await ca.issueWorkloadCert(A);
  const b = await ca.issueWorkloadCert(B);
  writeFileSync(join(dir, 'certificates.json'), JSON.stringify({
    trustBundle: ca.rootPem,
    certs: [
      { identity: A, keyPem: a.keyPem, chainPem: b.chainPem },
      { identity: B, keyPem: a.keyPem, chainPem: b.chainPem },
      { identity: 'spiffe://cluster.local/ns/c/sa/z' },
    ],
  }), { mode: 0o600 });
  const kept = new CertCache(dir).read();
  assert.deepEqual(kept.certs, []);
  writeFileSync(join(dir, 'certificates.json'), '{"certs": [');
  assert.deepEqual(new CertCache(dir).read(), { trustBundle: '', certs: [] }, 'a damaged file counts as none');
});
