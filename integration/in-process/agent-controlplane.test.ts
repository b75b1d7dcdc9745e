// The agent against the real control plane, in process: real gRPC over TLS on
// loopback, file-mode config, two nodes with their own tokens.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { startControlPlane } from '../../controlplane/server.ts';
import { FileSource } from '../../controlplane/file-source.ts';
import { CertificateAuthority } from '../../controlplane/ca.ts';
import { DirCaStore } from '../../controlplane/ca-dir-store.ts';
import { FileTokenAuthenticator } from '../../controlplane/node-auth.ts';
import { startNode } from '../../agent/node.ts';
import type { RunningNode } from '../../agent/node.ts';
import { generateKeyAndCsr } from '../../agent/csr.ts';
import { ControlPlaneCallError } from '../../agent/control-client.ts';

const FIXTURE = new URL('../../testdata/two-nodes/', import.meta.url);
const id = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
const NODE_1_IDENTITIES = [id('shop', 'api'), id('shop', 'web')];
const NODE_2_IDENTITIES = [id('shop', 'db'), id('shop', 'web')];

interface CertsBody {
  trustBundle: { fingerprints: string[] };
  certificates: { identity: string; state: string; notAfter: string }[];
}

async function getJson<T>(node: RunningNode, path: string): Promise<T> {
  const res = await fetch(`http://${node.adminAddress}${path}`);
  assert.equal(res.status, 200, `${path} on ${node.store.nodeName}`);
  return (await res.json()) as T;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

const validIdentities = async (node: RunningNode) =>
  (await getJson<CertsBody>(node, '/certs')).certificates.filter((c) => c.state === 'valid').map((c) => c.identity).sort();

const workloadNames = async (node: RunningNode) =>
  (await getJson<{ namespace: string; name: string }[]>(node, '/workloads')).map((w) => `${w.namespace}/${w.name}`).sort();

/**
 * A temp dir removed after every cleanup registered with `defer` has run (last
 * registered first): stopping a node flushes its state into the dir.
 */
function scratch(t: TestContext): { root: string; defer(cleanup: () => unknown): void } {
  const root = mkdtempSync(join(tmpdir(), 'nodemesh-agent-cp-'));
  const cleanups: (() => unknown)[] = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    rmSync(root, { recursive: true, force: true });
  });
  return { root, defer: (cleanup) => cleanups.push(cleanup) };
}

test('agents and control plane: certificates per node, node authorization, live enrollment, outage and restart', async (t) => {
  const { root, defer } = scratch(t);
  const configDir = join(root, 'config');
  cpSync(FIXTURE, configDir, { recursive: true });
  const tokens = { 'node-1': 'node-1-token-aaaaaaaaaaaaaaaa', 'node-2': 'node-2-token-bbbbbbbbbbbbbbbb' };
  for (const [node, token] of Object.entries(tokens)) writeFileSync(join(root, `${node}.token`), token);
  const caDir = join(root, 'ca');

  let port = 0;
  const startCp = async () => {
    const cp = await startControlPlane({
      source: new FileSource(configDir),
      listen: `127.0.0.1:${port}`,
      ca: await CertificateAuthority.loadOrCreate(new DirCaStore(caDir)),
      authenticator: new FileTokenAuthenticator(tokens),
    });
    port = Number(cp.address.split(':').pop());
    return cp;
  };
  let cp: Awaited<ReturnType<typeof startCp>> | undefined = await startCp();
  defer(() => cp?.stop());
  const caFile = join(root, 'controlplane-ca.pem');
  writeFileSync(caFile, cp.caPem);

  const nodes = new Map<string, RunningNode>();
  const start = async (nodeName: 'node-1' | 'node-2') => {
    const node = await startNode({
      nodeName, controlPlane: `127.0.0.1:${port}`, tokenFile: join(root, `${nodeName}.token`), caFile,
      stateDir: join(root, nodeName), adminAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', dataPlane: false,
    });
    nodes.set(nodeName, node);
    return node;
  };
  defer(async () => {
    for (const node of nodes.values()) await node.stop();
  });
  let node1 = await start('node-1');
  const node2 = await start('node-2');

  // Each agent holds certificates for exactly its own node's enrolled identities.
  await until('node-1 certificates', async () => (await validIdentities(node1)).join() === NODE_1_IDENTITIES.join(), 10_000);
  await until('node-2 certificates', async () => (await validIdentities(node2)).join() === NODE_2_IDENTITIES.join(), 10_000);
  assert.deepEqual(await workloadNames(node1), ['shop/api-1', 'shop/web-1']);
  assert.deepEqual(await workloadNames(node2), ['shop/db-2', 'shop/web-2']);
  const ready = await fetch(`http://${node1.healthAddress}/healthz/ready`);
  assert.equal(ready.status, 200, await ready.text());

  // node-2's token cannot get a certificate for an identity that runs only on node-1.
  const { csrPem } = await generateKeyAndCsr(id('shop', 'api'));
  await assert.rejects(node2.control.sign([csrPem]), (err: unknown) => {
    assert.ok(err instanceof ControlPlaneCallError);
    assert.equal(err.grpcCode, grpc.status.PERMISSION_DENIED);
    return true;
  });

  // Opting a pod in and out in the YAML reaches its node within a second.
  const pods = join(configDir, 'pods.yaml');
  const podsYaml = readFileSync(pods, 'utf8');
  const optIn = podsYaml.replace(/(name: report-1[\s\S]*?nodemesh\.io\/mesh: )disabled/, '$1enabled');
  assert.notEqual(optIn, podsYaml);
  writeFileSync(pods, optIn);
  await until('batch/report-1 enrolled on node-1', async () => (await workloadNames(node1)).includes('batch/report-1'), 1000);
  await until('batch/report certificate', async () => (await validIdentities(node1)).includes(id('batch', 'report')), 5000);
  writeFileSync(pods, podsYaml);
  await until('batch/report-1 removed from node-1', async () => !(await workloadNames(node1)).includes('batch/report-1'), 1000);
  await until('batch/report certificate dropped', async () => !(await validIdentities(node1)).includes(id('batch', 'report')), 1000);

  // Control plane down: both agents keep serving config and certificates.
  const versionBefore = node1.store.version;
  await cp.stop();
  cp = undefined;
  await until('node-1 to notice the outage', async () => !(await getJson<{ controlPlane: { connected: boolean } }>(node1, '/config_dump')).controlPlane.connected, 5000);
  for (const [node, identities] of [[node1, NODE_1_IDENTITIES], [node2, NODE_2_IDENTITIES]] as const) {
    const dump = await getJson<{ version: number; resources: unknown[] }>(node, '/config_dump');
    assert.ok(dump.resources.length > 0);
    assert.deepEqual(await validIdentities(node), identities);
    assert.ok(node.certs.certFor(identities[0]));
  }
  assert.equal(node1.store.version, versionBefore);

  // Back on the same port, with the same CA: both agents resync, and edits flow again.
  cp = await startCp();
  const epoch = cp.model.epoch;
  await until('node-1 resync', async () => (await getJson<{ controlPlane: { connected: boolean } }>(node1, '/config_dump')).controlPlane.connected, 15_000);
  await until('node-2 resync', async () => (await getJson<{ controlPlane: { connected: boolean } }>(node2, '/config_dump')).controlPlane.connected, 15_000);
  assert.equal(node1.store.epoch, epoch);
  writeFileSync(pods, optIn);
  await until('batch/report-1 enrolled after resync', async () => (await workloadNames(node1)).includes('batch/report-1'), 1000);
  await until('batch/report certificate after resync', async () => (await validIdentities(node1)).includes(id('batch', 'report')), 5000);

  // An agent restarted while the control plane is down serves its persisted config.
  await cp.stop();
  cp = undefined;
  const persisted = node1.store.snapshot();
  await node1.stop();
  nodes.delete('node-1');
  node1 = await start('node-1');
  const dump = await getJson<{ epoch: string; version: number; resources: unknown[]; synced: boolean }>(node1, '/config_dump');
  assert.equal(dump.synced, true);
  assert.equal(dump.epoch, persisted.epoch);
  assert.equal(dump.version, persisted.version);
  assert.equal(dump.resources.length, persisted.resources.length);
  assert.deepEqual(await workloadNames(node1), ['batch/report-1', 'shop/api-1', 'shop/web-1']);
  // Keys live in memory only: without a control plane there are no certificates yet, so not ready.
  const notReady = await fetch(`http://${node1.healthAddress}/healthz/ready`);
  assert.equal(notReady.status, 503);
  assert.match(await notReady.text(), /certificates issued/);
});

test('agent with a wrong token or a wrong CA keeps retrying and says what to check', async (t) => {
  const { root, defer } = scratch(t);
  cpSync(FIXTURE, join(root, 'config'), { recursive: true });
  const cp = await startControlPlane({
    source: new FileSource(join(root, 'config')),
    listen: '127.0.0.1:0',
    ca: await CertificateAuthority.create(),
    authenticator: new FileTokenAuthenticator({ 'node-1': 'node-1-token-aaaaaaaaaaaaaaaa' }),
  });
  defer(() => cp.stop());
  writeFileSync(join(root, 'good-ca.pem'), cp.caPem);
  writeFileSync(join(root, 'other-ca.pem'), (await CertificateAuthority.create()).rootPem);
  writeFileSync(join(root, 'wrong.token'), 'not-the-token-of-node-1-at-all');
  writeFileSync(join(root, 'right.token'), 'node-1-token-aaaaaaaaaaaaaaaa');

  const cases = [
    { tokenFile: 'wrong.token', caFile: 'good-ca.pem', error: /UNAUTHENTICATED/ },
    { tokenFile: 'right.token', caFile: 'other-ca.pem', error: /UNAVAILABLE/ },
  ];
  for (const [i, c] of cases.entries()) {
    const node = await startNode({
      nodeName: 'node-1', controlPlane: cp.address, tokenFile: join(root, c.tokenFile), caFile: join(root, c.caFile),
      stateDir: join(root, `state-${i}`), adminAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', dataPlane: false,
    });
    defer(() => node.stop());
    const state = await until(`the refusal (${c.tokenFile}, ${c.caFile})`, async () => {
      const dump = await getJson<{ controlPlane: { connected: boolean; lastError: string | null; reconnects: number } }>(node, '/config_dump');
      return dump.controlPlane.reconnects >= 2 && dump.controlPlane;
    }, 5000);
    assert.equal(state.connected, false);
    assert.match(state.lastError!, c.error);
    assert.equal(node.store.synced, false);
    const health = await fetch(`http://${node.healthAddress}/healthz/ready`);
    assert.equal(health.status, 503);
    assert.match(await health.text(), /config synced/);
  }
});
