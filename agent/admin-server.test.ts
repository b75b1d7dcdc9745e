import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMeshCa } from '../testdata/mesh-ca.ts';
import { TRACERS, debug, getLevel, enabledTracers, setLevel, setTracers } from '../core/log.ts';
import type { Workload } from '../core/types.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import { CertManager } from './cert-manager.ts';
import { ControlClient } from './control-client.ts';
import { AdminServer, isLoopback } from './admin-server.ts';
import { once } from 'node:events';
import { Registry } from 'prom-client';
import { WebSocket } from 'ws';
import { explain } from '../daemon/explain.ts';
import { ConnectionTracker } from '../daemon/connection-tracker.ts';
import { createMetrics } from '../daemon/metrics.ts';

const web: Workload = {
  uid: 'u1', namespace: 'shop', name: 'web-1', workloadName: 'web', serviceAccount: 'web', node: 'node-1', ip: '10.1.0.5',
  labels: { app: 'web' }, enrolled: true, mtlsMode: 'strict', namedPorts: {},
};

async function startAdmin(t: import('node:test').TestContext): Promise<{ base: string; certs: CertManager; store: ConfigStore }> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nodemesh-admin-'));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  const ca = await createMeshCa();
  const store = new ConfigStore('node-1');
  store.apply({
    epoch: 'e7', version: 3, snapshot: true, removals: [],
    upserts: [
      { kind: 'workload', key: 'u1', version: 1, workload: web },
      { kind: 'policy', key: 'shop/deny-all', version: 2, policy: { namespace: 'shop', name: 'deny-all', selector: null, action: 'DENY', rules: [{ from: [], to: [] }] } },
    ],
  });
  // Never started: the admin API only reads its connection state.
  const control = new ControlClient({ nodeName: 'node-1', address: '127.0.0.1:1', tokenFile: join(stateDir, 'token'), caPem: ca.rootPem, stateDir, store });
  t.after(() => control.close());
  const certs = new CertManager({
    store,
    signer: {
      async sign(csrs) {
        const signed = await Promise.all(csrs.map((c) => ca.signCsr(c)));
        return { certificates: signed.map((s) => ({ identity: s.identity, certChain: s.chainPem })), trustBundle: ca.rootPem };
      },
    },
  });
  t.after(() => certs.stop());
  certs.start();
  const admin = await AdminServer.listen('127.0.0.1:0', { store, certs, control, connections: () => [{ id: 1 }] });
  t.after(() => admin.close());
  return { base: `http://${admin.address}`, certs, store };
}

/** Restores the process-wide log level and tracers after a test that changes them. */
function keepLogging(t: import('node:test').TestContext): void {
  const before = { level: getLevel(), tracers: enabledTracers() };
  t.after(() => {
    setLevel(before.level);
    setTracers(before.tracers);
  });
}

/** The JSON lines written to stderr while the test runs (and not printed). */
function captureStderr(t: import('node:test').TestContext): () => { scope?: string; msg?: string; [k: string]: unknown }[] {
  const lines: string[] = [];
  t.mock.method(process.stderr, 'write', (chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split('\n').filter(Boolean));
    return true;
  });
  return () => lines.map((l) => JSON.parse(l));
}

test('admin: read endpoints return the node state as JSON', async (t) => {
  const { base, certs } = await startAdmin(t);
  while (!certs.allIssued()) await new Promise((r) => setTimeout(r, 20));

  const dump = await (await fetch(`${base}/config_dump`)).json();
  assert.equal(dump.epoch, 'e7');
  assert.equal(dump.version, 3);
  assert.equal(dump.resources.length, 2);
  assert.equal(dump.controlPlane.connected, false);
  assert.deepEqual(dump.rejected, []);

  const workloads = await (await fetch(`${base}/workloads`)).json();
  assert.equal(workloads.length, 1);
  assert.equal(workloads[0].identity, 'spiffe://cluster.local/ns/shop/sa/web');
  assert.equal(workloads[0].certificate.state, 'valid');
  assert.ok(Date.parse(workloads[0].certificate.notAfter) > Date.now());

  const certsBody = await (await fetch(`${base}/certs`)).json();
  assert.equal(certsBody.certificates[0].identity, 'spiffe://cluster.local/ns/shop/sa/web');
  assert.match(certsBody.trustBundle.fingerprints[0], /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  assert.deepEqual(await (await fetch(`${base}/connections`)).json(), [{ id: 1 }]);
  const policies = await (await fetch(`${base}/policies`)).json();
  assert.equal(policies[0].name, 'deny-all');
});

test('admin: methods are enforced, unknown paths list the endpoints', async (t) => {
  const { base } = await startAdmin(t);
  const post = await fetch(`${base}/config_dump`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET');
  assert.deepEqual(await post.json(), { error: '/config_dump accepts GET only', code: 'NM_ADMIN_METHOD' });
  const put = await fetch(`${base}/logging?level=debug`, { method: 'PUT' });
  assert.equal(put.status, 405);
  assert.equal(put.headers.get('allow'), 'GET, POST');
  assert.equal((await put.json()).code, 'NM_ADMIN_METHOD');
  const missing = await fetch(`${base}/nope`);
  assert.equal(missing.status, 404);
  const body = await missing.json();
  assert.match(body.error, /GET \/config_dump.*GET \/logging, POST \/logging/);
  assert.equal(body.code, 'NM_ADMIN_NO_ENDPOINT');
  const tap = await fetch(`${base}/tap`);
  assert.equal(tap.status, 426);
  assert.equal((await tap.json()).code, 'NM_ADMIN_WEBSOCKET');
});

test('admin: POST /logging from loopback changes level and tracers; a bad level is a 400', async (t) => {
  const { base } = await startAdmin(t);
  keepLogging(t);
  const res = await fetch(`${base}/logging?level=warn&tracers=hbone,outbound`, { method: 'POST' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { level: 'warn', tracers: ['hbone', 'outbound'] });
  assert.equal(getLevel(), 'warn');
  const bad = await fetch(`${base}/logging?level=loud`, { method: 'POST' });
  assert.equal(bad.status, 400);
  const body = await bad.json();
  assert.match(body.error, /level: "loud"/);
  assert.equal(body.code, 'NM_BAD_LOG_LEVEL');
  assert.equal(getLevel(), 'warn');
});

test('admin: GET /logging answers the level, the enabled tracers and every known tracer, and changes nothing', async (t) => {
  const { base } = await startAdmin(t);
  keepLogging(t);
  setLevel('info');
  setTracers(['hbone']);
  const res = await fetch(`${base}/logging?level=debug&tracers=*`);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.level, 'info');
  assert.deepEqual(body.tracers, ['hbone']);
  assert.deepEqual(body.known.map((k: { name: string }) => k.name), ['hbone', 'outbound', 'inbound', 'http', 'config', 'certs', 'enrollment']);
  for (const k of body.known) assert.equal(k.traces, TRACERS[k.name as keyof typeof TRACERS]);
  assert.equal(getLevel(), 'info', 'a GET never changes the level');
  assert.deepEqual(enabledTracers(), ['hbone']);
});

test('admin: POST /logging refuses an unknown tracer with a 400 naming the known ones, and changes nothing', async (t) => {
  const { base } = await startAdmin(t);
  keepLogging(t);
  setLevel('info');
  setTracers(['hbone']);
  const res = await fetch(`${base}/logging?level=debug&tracers=config,nope`, { method: 'POST' });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.code, 'NM_UNKNOWN_TRACER');
  assert.match(body.error, /tracers: unknown tracer "nope"; known: hbone, outbound, inbound, http, config, certs, enrollment \(or \* for all\)/);
  assert.equal(getLevel(), 'info');
  assert.deepEqual(enabledTracers(), ['hbone']);
});

test('admin: an enabled tracer emits, tracers= turns them off, * turns all on', async (t) => {
  const { base, certs, store } = await startAdmin(t);
  keepLogging(t);
  while (!certs.allIssued()) await new Promise((r) => setTimeout(r, 20));
  const lines = captureStderr(t);
  const certTraces = () => lines().filter((l) => l.scope === 'certs' && l.msg === 'requesting certificates');
  const addWorkload = async (version: number, serviceAccount: string) => {
    const w: Workload = { ...web, uid: `u${version}`, name: `${serviceAccount}-1`, workloadName: serviceAccount, serviceAccount, ip: `10.1.0.${version}` };
    store.apply({ epoch: 'e7', version, snapshot: false, removals: [], upserts: [{ kind: 'workload', key: w.uid, version, workload: w }] });
    while (!certs.allIssued()) await new Promise((r) => setTimeout(r, 20));
  };

  const on = await fetch(`${base}/logging?tracers=certs`, { method: 'POST' });
  assert.deepEqual(await on.json(), { level: getLevel(), tracers: ['certs'] });
  await addWorkload(4, 'api');
  assert.equal(certTraces().length, 1);
  assert.deepEqual(certTraces()[0]!.requests, [{ identity: 'spiffe://cluster.local/ns/shop/sa/api', reason: 'new' }]);

  const off = await fetch(`${base}/logging?tracers=`, { method: 'POST' });
  assert.deepEqual(await off.json(), { level: getLevel(), tracers: [] });
  await addWorkload(5, 'db');
  assert.equal(certTraces().length, 1, 'no trace once tracers are off');

  const all = await fetch(`${base}/logging?tracers=*`, { method: 'POST' });
  assert.deepEqual(await all.json(), { level: getLevel(), tracers: ['*'] });
  assert.equal(debug('config').enabled, true);
  assert.equal(debug('enrollment').enabled, true);
});

test('admin: only loopback peers count as local', () => {
  for (const a of ['127.0.0.1', '127.3.2.1', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopback(a), true, a);
  for (const a of ['10.0.0.1', '::ffff:10.0.0.1', '192.168.1.1', 'fe80::1', '::', '', undefined]) assert.equal(isLoopback(a), false, String(a));
});

test('admin: /explain answers from the data plane and rejects a malformed query naming the field', async (t) => {
  const store = new ConfigStore('node-1');
  store.apply({ epoch: 'e', version: 1, snapshot: true, removals: [], upserts: [{ kind: 'workload', key: 'u1', version: 1, workload: web }] });
  const admin = await AdminServer.listen('127.0.0.1:0', {
    store, certs: { status: () => [], trustBundleFingerprints: () => [] }, control: { status: () => ({ connected: false }) as never, rejected: () => [] },
    explain: (q) => explain(store, q),
  });
  t.after(() => admin.close());
  const base = `http://${admin.address}`;
  const ok = await fetch(`${base}/explain?source=10.1.0.99&destination=10.1.0.5:8080`);
  assert.equal(ok.status, 200);
  const body = await ok.json();
  assert.equal(body.targets[0].workload, 'shop/web-1');
  assert.match(body.capture, /inbound plaintext/);
  assert.equal(body.targets[0].authorization.allowed, false, 'web-1 is in a strict namespace');
  const bad = await fetch(`${base}/explain?source=10.1.0.99&destination=10.1.0.5`);
  assert.equal(bad.status, 400);
  const badBody = await bad.json();
  assert.match(badBody.error, /explain: destination: "10\.1\.0\.5" is not IPv4:PORT/);
  assert.equal(badBody.code, 'NM_BAD_EXPLAIN_QUERY');
});

test('admin: /explain takes the request\'s method, path and headers, and refuses hostile ones naming the parameter', async (t) => {
  const store = new ConfigStore('node-1');
  store.apply({ epoch: 'e', version: 1, snapshot: true, removals: [], upserts: [{ kind: 'workload', key: 'u1', version: 1, workload: web }] });
  const asked: unknown[] = [];
  const admin = await AdminServer.listen('127.0.0.1:0', {
    store, certs: { status: () => [], trustBundleFingerprints: () => [] }, control: { status: () => ({ connected: false }) as never, rejected: () => [] },
    explain: (q) => {
      asked.push(q.http);
      return explain(store, q);
    },
  });
  t.after(() => admin.close());
  const base = `http://${admin.address}/explain?source=10.1.0.99&destination=10.1.0.5:8080`;
  assert.equal((await fetch(`${base}&method=POST&path=${encodeURIComponent('/api/x?y=1')}&header=X-Canary:%20yes&header=x-b:1:2`)).status, 200);
  assert.deepEqual(asked, [{ method: 'POST', path: '/api/x?y=1', headers: { 'x-canary': 'yes', 'x-b': '1:2' } }]);
  for (const [query, reason] of [
    ['&method=get', /method: "get" is not an HTTP method/],
    ['&method=' + 'A'.repeat(17), /not an HTTP method/],
    ['&path=api', /path: must start with/],
    ['&path=/' + 'a'.repeat(5000), /path: must start with/],
    ['&header=nocolon', /header: "nocolon" is not name:value/],
    ['&header=bad%20name:x', /is not name:value/],
    [Array.from({ length: 33 }, (_, i) => `&header=h${i}:v`).join(''), /at most 32 headers/],
  ] as const) {
    const res = await fetch(`${base}${query}`);
    assert.equal(res.status, 400, query.slice(0, 40));
    const body = await res.json() as { error: string; code: string };
    assert.match(body.error, reason);
    assert.equal(body.code, 'NM_BAD_EXPLAIN_QUERY');
  }
});

test('admin: /tap streams connection open and close events over a WebSocket', async (t) => {
  const store = new ConfigStore('node-1');
  const tracker = new ConnectionTracker(createMetrics(new Registry()));
  const admin = await AdminServer.listen('127.0.0.1:0', {
    store, certs: { status: () => [], trustBundleFingerprints: () => [] }, control: { status: () => ({ connected: false }) as never, rejected: () => [] },
    tap: (listener) => tracker.subscribe(listener),
  });
  t.after(() => admin.close());
  const ws = new WebSocket(`ws://${admin.address}/tap`);
  t.after(() => ws.close());
  await once(ws, 'open');
  const events: { event: string; destination: { ip: string } }[] = [];
  ws.on('message', (data) => events.push(JSON.parse(String(data))));
  const conn = tracker.open({
    listener: 'inbound-plaintext', reporter: 'destination', sourceIp: '10.1.0.99', sourcePrincipal: null,
    destinationIp: web.ip, destinationPort: 8080, destinationWorkload: web, destinationPrincipal: null, security: 'none',
    bytes: () => ({ received: 5, sent: 7 }), destroy: () => {},
  });
  conn.finish();
  while (events.length < 2) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(events.map((e) => [e.event, e.destination.ip]), [['open', web.ip], ['close', web.ip]]);

  const notFound = new WebSocket(`ws://${admin.address}/nope`);
  const [err] = await once(notFound, 'error');
  assert.match(String(err), /404/);
});

test('admin: /tap filters on the node, and a hostile filter is a 400 before the upgrade', async (t) => {
  const store = new ConfigStore('node-1');
  const tracker = new ConnectionTracker(createMetrics(new Registry()));
  const admin = await AdminServer.listen('127.0.0.1:0', {
    store, certs: { status: () => [], trustBundleFingerprints: () => [] }, control: { status: () => ({ connected: false }) as never, rejected: () => [] },
    tap: (listener, filter) => tracker.subscribe(listener, filter),
  });
  t.after(() => admin.close());
  for (const query of ['event=drop', 'namespace=..%2Fetc', 'workload=%0d%0aSet-Cookie:%20x', 'event=open&event=close', 'x=1']) {
    const ws = new WebSocket(`ws://${admin.address}/tap?${query}`);
    const [res] = await Promise.race([once(ws, 'unexpected-response').then(([, r]) => [r]), once(ws, 'open').then(() => [null])]);
    assert.ok(res, `${query}: the upgrade is refused`);
    assert.equal(res.statusCode, 400, query);
    let body = '';
    for await (const chunk of res) body += chunk;
    assert.equal(JSON.parse(body).code, 'NM_BAD_TAP_FILTER', query);
    ws.terminate();
  }
  const ws = new WebSocket(`ws://${admin.address}/tap?event=close&namespace=shop`);
  t.after(() => ws.close());
  await once(ws, 'open');
  const events: { event: string; destination: { workload: string } }[] = [];
  ws.on('message', (data) => events.push(JSON.parse(String(data))));
  const open = (w: Workload) => tracker.open({
    listener: 'inbound-plaintext', reporter: 'destination', sourceIp: '10.1.0.99', sourcePrincipal: null,
    destinationIp: w.ip, destinationPort: 8080, destinationWorkload: w, destinationPrincipal: null, security: 'none',
    bytes: () => ({ received: 0, sent: 0 }), destroy: () => {},
  });
  open({ ...web, namespace: 'other', name: 'x-1' }).finish();
  open(web).finish();
  while (events.length < 1) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(events.map((e) => [e.event, e.destination.workload]), [['close', 'shop/web-1']], 'only the close of the shop workload');
});

test('admin: a /config_dump of 20,000 resources arrives whole and parses, written an entry at a time', async (t) => {
  const { base, store } = await startAdmin(t);
  const upserts = Array.from({ length: 20_000 }, (_, i) => ({
    kind: 'workload' as const, key: `bulk-${i}`, version: 1,
    workload: { ...web, uid: `bulk-${i}`, name: `bulk-${i}`, ip: `10.${2 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, node: 'node-2' },
  }));
  store.apply({ epoch: 'e7', version: 4, snapshot: false, removals: [], upserts });
  const res = await fetch(`${base}/config_dump`);
  assert.equal(res.status, 200);
  const text = await res.text();
  const dump = JSON.parse(text) as { version: number; resources: { key: string }[] };
  assert.equal(dump.version, 4);
  assert.equal(dump.resources.length, 20_002);
  // One resource per line: the array went out entry by entry, not as one string.
  assert.ok(text.split('\n').length > 20_000, 'the long array is written one entry per line');
  // Small answers stay pretty-printed.
  assert.match(await (await fetch(`${base}/policies`)).text(), /^\[\n {2}\{/);
});
