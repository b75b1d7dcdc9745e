// The HBONE listener and client pool together, in-process on 127.0.0.1 with a
// real CA. The listener is told the dialled IP from the socket's local address
// (there is no REDIRECT here); listeners.test.ts covers SO_ORIGINAL_DST.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import { createHash, randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { Registry } from 'prom-client';
import { createMeshCa } from '../testdata/mesh-ca.ts';
import { ConfigStore } from './config-store.ts';
import { PeerError } from '../core/errors.ts';
import { InboundListener } from './inbound.ts';
import { HbonePool } from './hbone-pool.ts';
import type { HboneRequest } from './hbone-pool.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { createMetrics } from './metrics.ts';
import { Admission, decide } from './admission.ts';
import { MemoryCertSource, applyConfig, denyFrom, echoServer, spiffe, workload } from './testdata/mesh-fixture.ts';

const server = workload('cart', '127.0.0.1', 'n1');
const client = workload('frontend', '10.1.0.7', 'n2', { namespace: 'web' });
const SERVER_ID = spiffe(server);
const CLIENT_ID = spiffe(client);

async function setup(t: import('node:test').TestContext) {
  const ca = await createMeshCa();
  const serverCerts = await MemoryCertSource.issuing(ca, [SERVER_ID]);
  const clientCerts = await MemoryCertSource.issuing(ca, [CLIENT_ID]);
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [server, client] });
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const tracker = new ConnectionTracker(metrics);
  const echo = await echoServer('127.0.0.1');
  t.after(() => echo.close());
  const inbound = await InboundListener.bind({
    config, certs: serverCerts, tracker, admission: new Admission(config, metrics), host: '127.0.0.1', port: 0,
    destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
  });
  t.after(() => inbound.close());
  const pool = new HbonePool({ certs: clientCerts, port: inbound.port });
  t.after(() => pool.destroy());
  const request = (extra: Partial<HboneRequest> = {}): HboneRequest => ({
    sourceIdentity: CLIENT_ID, destinationIdentity: SERVER_ID, destinationIp: '127.0.0.1', destinationNode: 'n1',
    target: `127.0.0.1:${echo.port}`, forwardedFor: client.ip, ...extra,
  });
  return { ca, config, registry, tracker, echo, inbound, pool, request, serverCerts, clientCerts };
}

function roundTrip(stream: Duplex, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
    stream.end(payload);
  });
}

test('CONNECT round trip: identities checked both ways, Forwarded source, pooled session, metrics', async (t) => {
  const { pool, request, tracker, registry } = await setup(t);
  const first = await pool.connect(request());
  const second = await pool.connect(request());
  assert.equal(pool.size, 1, 'both tunnels share one session');
  const seen = tracker.list() as { source: { ip: string; identity: string }; destination: { identity: string }; security: string }[];
  assert.equal(seen.length, 2);
  assert.equal(seen[0]!.source.identity, 'spiffe://cluster.local/ns/web/sa/frontend', 'server saw the client certificate identity');
  assert.equal(seen[0]!.source.ip, client.ip, 'Forwarded: for= gives the source IP');
  assert.equal(seen[0]!.destination.identity, 'spiffe://cluster.local/ns/shop/sa/cart');
  assert.equal(seen[0]!.security, 'mutual_tls');
  assert.deepEqual(await roundTrip(first, Buffer.from('hello')), Buffer.from('hello'));
  assert.deepEqual(await roundTrip(second, Buffer.from('again')), Buffer.from('again'));
  await tracker.idle();
  const text = await registry.metrics();
  assert.match(text, /nodemesh_tcp_connections_closed_total\{reporter="destination",source_workload="frontend",source_workload_namespace="web",source_principal="spiffe:\/\/cluster.local\/ns\/web\/sa\/frontend",destination_workload="cart",.*connection_security_policy="mutual_tls"\} 2/);
  assert.match(text, /nodemesh_tcp_received_bytes_total\{reporter="destination".*\} 10/);
  assert.match(text, /nodemesh_tcp_sent_bytes_total\{reporter="destination".*\} 10/);
});

test('malformed requests get 400 on their stream only; the session keeps working', async (t) => {
  const { inbound, echo, ca } = await setup(t);
  const certs = await MemoryCertSource.issuing(ca, [CLIENT_ID]);
  const cert = certs.certFor(CLIENT_ID)!;
  const session = http2.connect(`https://127.0.0.1:${inbound.port}`, {
    createConnection: () => tls.connect({ host: '127.0.0.1', port: inbound.port, key: cert.keyPem, cert: cert.chainPem, ca: ca.rootPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }),
  });
  t.after(() => session.destroy());
  const status = (headers: http2.OutgoingHttpHeaders) => new Promise<{ status: number; reason: string; stream: http2.ClientHttp2Stream }>((resolve, reject) => {
    const stream = session.request(headers, { endStream: false });
    stream.on('error', reject);
    stream.on('response', (h) => resolve({ status: Number(h[':status']), reason: String(h['nodemesh-reason'] ?? ''), stream }));
  });
  const get = await status({ ':method': 'GET', ':path': '/' });
  assert.equal(get.status, 400);
  assert.match(get.reason, /expects CONNECT, got GET/);
  const noPort = await status({ ':method': 'CONNECT', ':authority': 'cart.shop' });
  assert.equal(noPort.status, 400);
  assert.match(noPort.reason, /:authority must be <pod IP>:<port>/);
  const notLocal = await status({ ':method': 'CONNECT', ':authority': '10.9.9.9:80' });
  assert.equal(notLocal.status, 404);
  assert.match(notLocal.reason, /no enrolled workload with IP 10.9.9.9 on node n1/);
  const good = await status({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echo.port}`, forwarded: `for=${client.ip}` });
  assert.equal(good.status, 200);
  assert.deepEqual(await roundTrip(good.stream, Buffer.from('still fine')), Buffer.from('still fine'));
});

test('a tunnel denied by policy gets 403 with the reason', async (t) => {
  const { pool, request, config, registry } = await setup(t);
  applyConfig(config, { workloads: [server, client], policies: [denyFrom('shop', 'no-web', 'web')] }, 2);
  await assert.rejects(pool.connect(request()), (err: Error) => {
    assert.ok(err instanceof PeerError);
    assert.match(err.message, /refused the tunnel to 127\.0\.0\.1:\d+ with 403: denied by DENY policy shop\/no-web/);
    return true;
  });
  assert.match(await registry.metrics(), /nodemesh_tcp_connections_denied_total\{.*reason="policy"\} 1/);
});

test('a policy change closes open tunnels it no longer allows', async (t) => {
  const { pool, request, config, tracker } = await setup(t);
  const stream = await pool.connect(request());
  const closed = new Promise((resolve) => stream.once('close', resolve));
  stream.resume();
  tracker.reauthorize((input) => decide(config, input));
  assert.equal(tracker.size, 1, 'still allowed: kept open');
  applyConfig(config, { workloads: [server, client], policies: [denyFrom('shop', 'no-web', 'web')] }, 2);
  tracker.reauthorize((input) => decide(config, input));
  await closed;
  await tracker.idle();
});

test('clients without a certificate of the mesh CA fail the handshake', async (t) => {
  const { inbound, ca, pool, request } = await setup(t);
  const otherCa = await createMeshCa();
  const rogue = await MemoryCertSource.issuing(otherCa, [CLIENT_ID]);
  // Trusts the real root (so it would accept the server) but presents a foreign certificate.
  const rogueWithRealBundle = {
    certFor: (id: string) => rogue.certFor(id),
    trustBundle: () => ca.rootPem,
    onChange: () => {},
  };
  const roguePool = new HbonePool({ certs: rogueWithRealBundle, port: inbound.port });
  t.after(() => roguePool.destroy());
  await assert.rejects(roguePool.connect(request()), PeerError);

  // No client certificate at all.
  const bare = tls.connect({ host: '127.0.0.1', port: inbound.port, ca: ca.rootPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  t.after(() => bare.destroy());
  const outcome = await new Promise<string>((resolve) => {
    bare.on('error', (err) => resolve(`error: ${err.message}`));
    bare.on('close', () => resolve('closed'));
    bare.on('data', () => resolve('data'));
  });
  assert.notEqual(outcome, 'data');
  // The server is still fine for a proper client.
  const ok = await pool.connect(request());
  assert.deepEqual(await roundTrip(ok, Buffer.from('x')), Buffer.from('x'));
});

test('the client refuses a server presenting another identity', async (t) => {
  const { pool, request } = await setup(t);
  await assert.rejects(pool.connect(request({ destinationIdentity: 'spiffe://cluster.local/ns/shop/sa/payments' })), (err: Error) => {
    assert.ok(err instanceof PeerError);
    assert.match(err.message, /presented spiffe:\/\/cluster.local\/ns\/shop\/sa\/cart, expected spiffe:\/\/cluster.local\/ns\/shop\/sa\/payments/);
    return true;
  });
});

test('an unreachable peer is reported with what to check', async (t) => {
  const { clientCerts, request } = await setup(t);
  const closedPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
  const pool = new HbonePool({ certs: clientCerts, port: closedPort });
  t.after(() => pool.destroy());
  await assert.rejects(pool.connect(request()), /maybe a NetworkPolicy is blocking HBONE port 15008 on n1/);
});

test('a certificate rotation evicts the sessions of that identity', async (t) => {
  const { pool, request, clientCerts, ca } = await setup(t);
  const stream = await pool.connect(request());
  assert.equal(pool.size, 1);
  await clientCerts.issue(ca, CLIENT_ID);
  pool.certsChanged();
  assert.equal(pool.size, 0);
  // The open tunnel finishes on the old session; a new one uses the new certificate.
  assert.deepEqual(await roundTrip(stream, Buffer.from('old')), Buffer.from('old'));
  const fresh = await pool.connect(request());
  assert.equal(pool.size, 1);
  assert.deepEqual(await roundTrip(fresh, Buffer.from('new')), Buffer.from('new'));
});

test('64 MiB through a tunnel arrive intact', async (t) => {
  const { pool, request } = await setup(t);
  const stream = await pool.connect(request());
  const sent = createHash('sha256');
  const got = createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (c: Buffer) => {
      got.update(c);
      received += c.length;
    });
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  const chunk = 1024 * 1024;
  const started = Date.now();
  for (let i = 0; i < 64; i++) {
    const buf = randomBytes(chunk);
    sent.update(buf);
    if (!stream.write(buf)) await new Promise((r) => stream.once('drain', r));
  }
  stream.end();
  await done;
  assert.equal(received, 64 * chunk);
  assert.equal(got.digest('hex'), sent.digest('hex'));
  t.diagnostic(`64 MiB echoed in ${Date.now() - started} ms`);
});
