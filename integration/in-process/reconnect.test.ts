// An agent reconnecting to a control plane that was away long enough for a gRPC
// channel's own reconnect backoff to grow (grpc-js's default reaches 120 s; after
// a 2-minute outage nodes took 45-67 s to come back). Real gRPC over TLS on
// loopback, file-mode config, the control plane restarted on the same port.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startControlPlane } from '../../controlplane/server.ts';
import { FileSource } from '../../controlplane/file-source.ts';
import { CertificateAuthority } from '../../controlplane/ca.ts';
import { DirCaStore } from '../../controlplane/ca-dir-store.ts';
import { FileTokenAuthenticator } from '../../controlplane/node-auth.ts';
import { startNode } from '../../agent/node.ts';

const FIXTURE = new URL('../../testdata/two-nodes/', import.meta.url);
/** Long enough for grpc-js's default backoff (1 s ×1.6 per attempt) to be at ~6 s between attempts. */
const OUTAGE_MS = 15_000;

const POLICY = `apiVersion: security.nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: written-while-away
  namespace: shop
spec:
  action: DENY
  rules: [{ to: [{ operation: { ports: ["7001"] } }] }]
`;

test('after a long outage the agent resyncs within seconds of the control plane\'s return, with the policies written meanwhile', { timeout: 120_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nodemesh-reconnect-'));
  const configDir = join(root, 'config');
  cpSync(FIXTURE, configDir, { recursive: true });
  const tokens = { 'node-1': 'node-1-token-aaaaaaaaaaaaaaaa' };
  writeFileSync(join(root, 'node-1.token'), tokens['node-1']);
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
  writeFileSync(join(root, 'ca.pem'), cp.caPem);
  const node = await startNode({
    nodeName: 'node-1', controlPlane: `127.0.0.1:${port}`, tokenFile: join(root, 'node-1.token'), caFile: join(root, 'ca.pem'),
    stateDir: join(root, 'node-1'), adminAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', dataPlane: false,
  });
  t.after(async () => {
    await node.stop();
    await cp?.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const until = async (what: string, probe: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(10);
    }
  };
  await until('the first sync', () => node.control.status().connected && node.store.epoch === cp!.model.epoch, 10_000);

  await cp.stop();
  cp = undefined;
  await until('the agent to notice the outage', () => !node.control.status().connected, 4_000);
  writeFileSync(join(configDir, 'policy.yaml'), POLICY);
  await sleep(OUTAGE_MS);

  cp = await startCp();
  const back = performance.now();
  const epoch = cp.model.epoch;
  // A safe bound for a loaded CI machine; the target is 2 s, the measurement is printed.
  await until('the resync with the restarted control plane', () => node.store.epoch === epoch && node.control.status().connected, 4_000);
  const delayMs = performance.now() - back;
  t.diagnostic(`resynced ${delayMs.toFixed(0)} ms after the control plane returned from a ${OUTAGE_MS / 1000} s outage`);
  assert.deepEqual(node.store.policies().map((p) => `${p.namespace}/${p.name}`), ['shop/written-while-away'], 'the policy written during the outage applies at reconnect');
});
