// What a pod can read from its node: /metrics (15020) and /healthz/ready (15021)
// listen on the node's addresses for Prometheus and the kubelet, so any pod on
// the node can read them too (docs/ARCHITECTURE.md, "What pods can read from the
// node"). They carry names, counts and expiry times, never key or certificate
// material: checked here against a node holding real certificates from a real
// control plane.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startControlPlane } from '../../controlplane/server.ts';
import { FileSource } from '../../controlplane/file-source.ts';
import { CertificateAuthority } from '../../controlplane/ca.ts';
import { FileTokenAuthenticator } from '../../controlplane/node-auth.ts';
import { startNode } from '../../agent/node.ts';

const FIXTURE = new URL('../../testdata/two-nodes/', import.meta.url);
const IDENTITIES = ['spiffe://cluster.local/ns/shop/sa/api', 'spiffe://cluster.local/ns/shop/sa/web'];
const TOKEN = 'node-1-token-aaaaaaaaaaaaaaaa';

/** The base64 lines of every PEM block in `pem`, headers dropped. */
function pemLines(pem: string): string[] {
  return pem.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('-----'));
}

test('/metrics and /healthz/ready carry no PEM, key or token material: expiry times per identity only', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nodemesh-scrape-'));
  cpSync(FIXTURE, join(root, 'config'), { recursive: true });
  writeFileSync(join(root, 'node-1.token'), TOKEN);
  const cp = await startControlPlane({
    source: new FileSource(join(root, 'config')), listen: '127.0.0.1:0',
    ca: await CertificateAuthority.create(), authenticator: new FileTokenAuthenticator({ 'node-1': TOKEN }),
  });
  writeFileSync(join(root, 'ca.pem'), cp.caPem);
  const node = await startNode({
    nodeName: 'node-1', controlPlane: cp.address, tokenFile: join(root, 'node-1.token'), caFile: join(root, 'ca.pem'),
    stateDir: join(root, 'node-1'), adminAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', dataPlane: false,
  });
  t.after(async () => {
    await node.stop();
    await cp.stop();
    rmSync(root, { recursive: true, force: true });
  });
  for (let deadline = Date.now() + 10_000; !IDENTITIES.every((id) => node.certs.certFor(id)); await sleep(25)) {
    if (Date.now() > deadline) throw new Error('the node got no certificates in 10 s');
  }

  const secrets = IDENTITIES.flatMap((id) => {
    const cert = node.certs.certFor(id)!;
    return [...pemLines(cert.keyPem), ...pemLines(cert.chainPem)];
  });
  secrets.push(...pemLines(cp.caPem), TOKEN);
  assert.ok(secrets.length > 10);

  const bodies: Record<string, string> = {};
  for (const url of [`http://${node.metricsAddress}/metrics`, `http://${node.healthAddress}/healthz/ready`, `http://${node.healthAddress}/healthz`, `http://${node.metricsAddress}/`]) {
    bodies[url] = await (await fetch(url)).text();
  }
  const metrics = bodies[`http://${node.metricsAddress}/metrics`]!;
  for (const id of IDENTITIES) {
    assert.match(metrics, new RegExp(`nodemesh_agent_certificate_expiry_timestamp_seconds\\{identity="${id}"\\} \\d+`), 'expiry per identity is there');
  }
  assert.match(bodies[`http://${node.healthAddress}/healthz/ready`]!, /^ready\n$/);
  for (const [url, body] of Object.entries(bodies)) {
    assert.doesNotMatch(body, /-----BEGIN|PRIVATE KEY|CERTIFICATE-----/, `${url}: no PEM`);
    // A key, a certificate or a token is a long run of base64; nothing on these pages is.
    assert.doesNotMatch(body, /[A-Za-z0-9+/=]{40,}/, `${url}: no base64 blob`);
    for (const line of secrets) assert.ok(!body.includes(line.slice(0, 32)), `${url}: no part of a key, certificate or token`);
  }
});
