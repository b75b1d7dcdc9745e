// What a hostile peer could do to the HBONE listener (15008) and the plaintext
// listener's HTTP handling (15006), each named after what broke: a Forwarded
// header that lied about the source, sockets held open before the handshake,
// 10,000 streams on one connection, no cap per peer, half a request head held
// forever. In-process on 127.0.0.1 with certificates of the real mesh CA; the
// listener is told the dialled IP from the socket's local address.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import type { AuthorizationPolicy, Service } from '../core/types.ts';
import { PeerError } from '../core/errors.ts';
import { createMeshCa } from '../testdata/mesh-ca.ts';
import { ConfigStore } from './config-store.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { createMetrics } from './metrics.ts';
import { Admission } from './admission.ts';
import { InboundListener, parseForwardedFor } from './inbound.ts';
import { InboundPlaintextListener } from './inbound-plaintext.ts';
import { LoadBalancer } from './load-balancer.ts';
import { HbonePool } from './hbone-pool.ts';
import type { HboneRequest } from './hbone-pool.ts';
import { HttpInbound } from './l7/http-inbound.ts';
import { FAIR_LAG_MS, FairShare } from './fair-share.ts';
import { MemoryCertSource, applyConfig, echoServer, spiffe, workload } from './testdata/mesh-fixture.ts';

const server = workload('cart', '127.0.0.1', 'n1');
/** The peer: its certificate is frontend's, and frontend's pod is 10.1.0.7. */
const client = workload('frontend', '10.1.0.7', 'n2', { namespace: 'web' });
/** Another workload of another identity, whose address the peer claims. */
const victim = workload('admin', '10.1.0.9', 'n3', { namespace: 'web' });
/** A second workload of the peer's own identity. */
const sibling = workload('frontend-2', '10.1.0.8', 'n2', { namespace: 'web', serviceAccount: 'frontend' });
/** Another identity on the peer's node, for the per-peer cap. */
const neighbour = workload('reports', '10.1.0.10', 'n2', { namespace: 'web' });
const SERVER_ID = spiffe(server);
const CLIENT_ID = spiffe(client);
const NEIGHBOUR_ID = spiffe(neighbour);

async function setup(t: TestContext, opts: { handshakeTimeoutMs?: number; maxStreamsPerPeer?: number; idleTimeoutMs?: number; poolIdleTimeoutMs?: number; policies?: AuthorizationPolicy[]; fairShare?: FairShare } = {}) {
  const ca = await createMeshCa();
  const serverCerts = await MemoryCertSource.issuing(ca, [SERVER_ID]);
  const clientCerts = await MemoryCertSource.issuing(ca, [CLIENT_ID, NEIGHBOUR_ID]);
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [server, client, victim, sibling, neighbour], policies: opts.policies ?? [] });
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const tracker = new ConnectionTracker(metrics);
  const echo = await echoServer('127.0.0.1');
  t.after(() => echo.close());
  const inbound = await InboundListener.bind({
    config, certs: serverCerts, tracker, admission: new Admission(config, metrics), host: '127.0.0.1', port: 0,
    destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
    handshakeTimeoutMs: opts.handshakeTimeoutMs, maxStreamsPerPeer: opts.maxStreamsPerPeer, idleTimeoutMs: opts.idleTimeoutMs, fairShare: opts.fairShare,
  });
  t.after(() => inbound.close());
  const pool = new HbonePool({ certs: clientCerts, port: inbound.port, idleTimeoutMs: opts.poolIdleTimeoutMs });
  t.after(() => pool.destroy());
  const request = (extra: Partial<HboneRequest> = {}): HboneRequest => ({
    sourceIdentity: CLIENT_ID, destinationIdentity: SERVER_ID, destinationIp: '127.0.0.1', destinationNode: 'n1',
    target: `127.0.0.1:${echo.port}`, forwardedFor: client.ip, ...extra,
  });
  /** A peer speaking HTTP/2 itself, with the client certificate: it sends what headers it likes. */
  const rawPeer = (options: http2.ClientSessionOptions = {}) => {
    const cert = clientCerts.certFor(CLIENT_ID)!;
    const session = http2.connect(`https://127.0.0.1:${inbound.port}`, {
      ...options,
      createConnection: () => tls.connect({ host: '127.0.0.1', port: inbound.port, key: cert.keyPem, cert: cert.chainPem, ca: ca.rootPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }),
    });
    session.on('error', () => {});
    t.after(() => session.destroy());
    return session;
  };
  /** Refusals counted with this reason, over every series. */
  const denied = async (reason: string) => {
    const series = new RegExp(`^nodemesh_tcp_connections_denied_total\\{[^}]*reason="${reason}"\\} (\\d+)$`, 'gm');
    return [...(await registry.metrics()).matchAll(series)].reduce((sum, m) => sum + Number(m[1]), 0);
  };
  return { ca, config, registry, tracker, echo, inbound, pool, request, rawPeer, denied, clientCerts };
}

/** Sends a CONNECT to the echo server; resolves with the answer (or the reset). */
function connect(session: http2.ClientHttp2Session, authority: string, headers: http2.OutgoingHttpHeaders = {}) {
  return new Promise<{ status: number | null; reason: string; rstCode: number | null; stream: http2.ClientHttp2Stream }>((resolve) => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...headers }, { endStream: false });
    stream.on('error', () => {});
    stream.once('response', (h) => resolve({ status: Number(h[':status']), reason: String(h['nodemesh-reason'] ?? ''), rstCode: null, stream }));
    stream.once('close', () => resolve({ status: null, reason: '', rstCode: stream.rstCode ?? null, stream }));
  });
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

test('300 silent sockets at 15008 are all closed within the handshake deadline', async (t) => {
  const DEADLINE = 300;
  const { inbound, clientCerts, ca, denied, pool, request } = await setup(t, { handshakeTimeoutMs: DEADLINE });
  const fdsBefore = openFds();
  const cert = clientCerts.certFor(CLIENT_ID)!;
  const lifetimes: number[] = [];
  const kinds = { raw: 0, partialHello: 0, tlsNoPreface: 0 };
  const watch = (socket: net.Socket, started: number) => new Promise<void>((resolve) => {
    socket.on('error', () => {});
    // Reading, as a peer would: a paused socket never sees the server's FIN.
    socket.resume();
    socket.once('close', () => {
      lifetimes.push(Date.now() - started);
      resolve();
    });
  });
  const closed: Promise<void>[] = [];
  const opened: Promise<void>[] = [];
  for (let i = 0; i < 100; i++) {
    const started = Date.now();
    // Raw TCP: connects and says nothing.
    const raw = net.connect(inbound.port, '127.0.0.1');
    opened.push(new Promise((r) => raw.once('connect', () => r(void kinds.raw++))));
    closed.push(watch(raw, started));
    // A ClientHello record header and then a byte every 50 ms: an idle timer never fires on it.
    const hello = net.connect(inbound.port, '127.0.0.1', () => {
      kinds.partialHello++;
      hello.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
      const drip = setInterval(() => hello.destroyed ? clearInterval(drip) : hello.write(Buffer.from([0])), 50);
      hello.once('close', () => clearInterval(drip));
    });
    closed.push(watch(hello, started));
  }
  await Promise.all(opened);
  // Completed TLS with the mesh certificate, then no HTTP/2 preface.
  for (let i = 0; i < 100; i++) {
    const started = Date.now();
    const secure = tls.connect({ host: '127.0.0.1', port: inbound.port, key: cert.keyPem, cert: cert.chainPem, ca: ca.rootPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
    secure.once('secureConnect', () => kinds.tlsNoPreface++);
    closed.push(watch(secure, started));
  }
  const fdsHeld = openFds();
  const started = Date.now();
  await Promise.all(closed);
  const allClosedMs = Date.now() - started;
  assert.equal(kinds.raw, 100);
  assert.equal(kinds.partialHello, 100);
  assert.equal(kinds.tlsNoPreface, 100, 'every TLS socket completed its handshake before it was closed');
  const longest = Math.max(...lifetimes);
  // The slack is a loaded machine's event-loop lag (100 TLS handshakes in this process); before, they lived forever.
  assert.ok(longest < DEADLINE + 4000, `a silent socket lived ${longest} ms with a ${DEADLINE} ms deadline`);
  assert.ok(Math.min(...lifetimes) >= DEADLINE - 20, 'none is closed before its deadline');
  assert.equal(await denied('handshake_timeout'), 300);
  // Let the server side's sockets go too.
  await new Promise((r) => setTimeout(r, 100));
  const fdsAfter = openFds();
  assert.ok(fdsAfter <= fdsBefore + 10, `fds ${fdsBefore} before, ${fdsHeld} while held, ${fdsAfter} after`);
  t.diagnostic(`300 silent sockets closed ${allClosedMs} ms after the last was opened (longest lived ${longest} ms); fds ${fdsBefore} -> ${fdsHeld} -> ${fdsAfter}`);
  // A real peer still gets its tunnel, and a session that stays idle past the deadline is not closed.
  const stream = await pool.connect(request());
  await new Promise((r) => setTimeout(r, DEADLINE + 200));
  assert.equal(stream.destroyed, false, 'a session that sent its SETTINGS is past the deadline');
  stream.destroy();
});

test('stream 101 on one HBONE connection is refused with REFUSED_STREAM', async (t) => {
  const { rawPeer, echo, pool, request } = await setup(t);
  const authority = `127.0.0.1:${echo.port}`;
  // The 101 CONNECTs leave before our SETTINGS arrive: the client believes it may open 1,000.
  const session = rawPeer({ peerMaxConcurrentStreams: 1000 });
  const answers = await Promise.all(Array.from({ length: 101 }, () => connect(session, authority, { forwarded: `for=${client.ip}` })));
  assert.equal(answers.filter((a) => a.status === 200).length, 100, 'the first 100 are tunnels');
  const refused = answers.filter((a) => a.status !== 200);
  assert.equal(refused.length, 1);
  assert.equal(refused[0]!.rstCode, http2.constants.NGHTTP2_REFUSED_STREAM);
  assert.equal(refused[0], answers[100], 'the one refused is the 101st');
  assert.equal(session.remoteSettings.maxConcurrentStreams, 100, 'the limit is advertised');
  // Only that stream: once one tunnel closes, the session takes another.
  answers[0]!.stream.destroy();
  await new Promise((r) => answers[0]!.stream.once('close', r));
  // (Not in the same read as the reset: node would still count the old stream; the pool retries that case, below.)
  await new Promise((r) => setTimeout(r, 10));
  const next = await connect(session, authority, { forwarded: `for=${client.ip}` });
  assert.equal(next.status, 200, `rst ${next.rstCode}`);

  // Our own pool honours the limit: the 101st tunnel goes on a second session rather than waiting.
  const tunnels = await Promise.all(Array.from({ length: 101 }, () => pool.connect(request())));
  assert.equal(pool.size, 2);
  // A full session churns: a tunnel closes and the next opens at once in its place, 20 times.
  for (let i = 0; i < 20; i++) {
    const closing = tunnels.shift()!;
    closing.destroy();
    await new Promise((r) => closing.once('close', r));
    tunnels.push(await pool.connect(request()));
  }
  assert.equal(pool.size, 2);
  tunnels.forEach((s) => s.destroy());
});

test('a spoofed Forwarded against an ipBlocks ALLOW and an ipBlocks DENY is refused, not 200', async (t) => {
  const allowVictimOnly: AuthorizationPolicy = {
    namespace: 'shop', name: 'admin-only', selector: null, action: 'ALLOW',
    rules: [{ from: [{ principals: [], notPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [`${victim.ip}/32`, `${sibling.ip}/32`], notIpBlocks: [] }], to: [] }],
  };
  const denyClient: AuthorizationPolicy = {
    namespace: 'shop', name: 'not-frontend', selector: null, action: 'DENY',
    rules: [{ from: [{ principals: [], notPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [`${client.ip}/32`], notIpBlocks: [] }], to: [] }],
  };
  const spoofs = {
    plain: `for=${victim.ip}`,
    quoted: `for="${victim.ip}"`,
    'quoted IPv4 in brackets': `for="[${victim.ip}]"`,
    'several for= values': `for=${victim.ip}, for=${client.ip}`,
    'several for= pairs': `for=${victim.ip};for=${client.ip}`,
    'an address no workload has': 'for=10.1.0.99',
  };
  for (const [policy, name] of [[allowVictimOnly, 'ipBlocks ALLOW'], [denyClient, 'ipBlocks DENY']] as const) {
    const { rawPeer, echo, denied, tracker } = await setup(t, { policies: [policy] });
    const session = rawPeer();
    const authority = `127.0.0.1:${echo.port}`;
    for (const [variant, forwarded] of Object.entries(spoofs)) {
      const answer = await connect(session, authority, { forwarded });
      assert.equal(answer.status, 400, `${name}, ${variant}: ${JSON.stringify(forwarded)} got ${answer.status}`);
      assert.match(answer.reason, /Forwarded/, `${name}, ${variant}: the reason names the header`);
    }
    const missing = await connect(session, authority);
    assert.equal(missing.status, 400);
    assert.match(missing.reason, /no Forwarded header/);
    assert.equal(await denied('forwarded_mismatch'), Object.keys(spoofs).length + 1);
    assert.equal(tracker.size, 0, 'nothing was tracked under a claimed workload');
  }

  // The positive case: the peer's own workloads are accepted, and counted under their own name.
  const { rawPeer, echo, tracker } = await setup(t, { policies: [allowVictimOnly] });
  const session = rawPeer();
  const authority = `127.0.0.1:${echo.port}`;
  const own = await connect(session, authority, { forwarded: `for=${client.ip}` });
  assert.equal(own.status, 403, 'its own address is accepted as the source, and the ALLOW policy does not name it');
  for (const forwarded of [`for=${sibling.ip}`, `For="${sibling.ip}"`, `for=${sibling.ip};proto=http`]) {
    const answer = await connect(session, authority, { forwarded });
    assert.equal(answer.status, 200, `${forwarded}: a workload of the peer's own identity is its source (${answer.reason})`);
    const seen = tracker.list().at(-1) as { source: { ip: string; workload: string } };
    assert.equal(seen.source.ip, sibling.ip);
    answer.stream.destroy();
  }
});

test('Forwarded is read strictly: one for= with an IPv4 address, bare or quoted, or a quoted bracketed IPv6 address', () => {
  assert.deepEqual(parseForwardedFor('for=10.1.0.7'), { ip: '10.1.0.7' });
  assert.deepEqual(parseForwardedFor('for="10.1.0.7"'), { ip: '10.1.0.7' });
  assert.deepEqual(parseForwardedFor('for="[fd00::7]"'), { ip: 'fd00::7' });
  assert.deepEqual(parseForwardedFor('for="[::ffff:10.1.0.7]"'), { ip: '10.1.0.7' });
  assert.deepEqual(parseForwardedFor(' for=10.1.0.7 ; proto=https'), { ip: '10.1.0.7' });
  for (const bad of [undefined, '', 'for=10.1.0.7, for=10.1.0.9', 'for=10.1.0.7;for=10.1.0.7', 'for="[10.1.0.7]"', 'for=fd00::7', 'for="10.1.0.7:80"',
    'for=unknown', 'for=_hidden', 'for=010.1.0.7x', 'by=10.1.0.7', 'for="10.1.0.7', 'for=10.1.0.7 garbage', ['for=10.1.0.7', 'for=10.1.0.9']]) {
    assert.ok('error' in parseForwardedFor(bad), `${JSON.stringify(bad)} must be refused`);
  }
});

test('a peer over its open-tunnel limit is refused with 503 source_limit; other identities on its node are not', async (t) => {
  const { pool, request, denied, registry } = await setup(t, { maxStreamsPerPeer: 3 });
  const held = await Promise.all([1, 2, 3].map(() => pool.connect(request())));
  await assert.rejects(pool.connect(request()), (err: Error) => {
    assert.ok(err instanceof PeerError);
    assert.match(err.message, /with 503: peer spiffe:\/\/cluster.local\/ns\/web\/sa\/frontend at 127\.0\.0\.1 already holds 3 open tunnels to this node \(limit 3\)/);
    return true;
  });
  await assert.rejects(pool.connect(request()), PeerError);
  assert.equal(await denied('source_limit'), 2);
  assert.match(await registry.metrics(), /denied_total\{[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/web\/sa\/frontend",reason="source_limit"\} 2/);
  // Another workload of the same node has its own budget.
  const other = await pool.connect(request({ sourceIdentity: NEIGHBOUR_ID, forwardedFor: neighbour.ip }));
  other.destroy();
  // A closed tunnel frees its place.
  held[0]!.destroy();
  await new Promise((r) => held[0]!.once('close', r));
  await new Promise((r) => setTimeout(r, 50));
  const again = await pool.connect(request());
  again.destroy();
  held.slice(1).forEach((s) => s.destroy());
});

/** The plaintext listener (15006) in front of `pod`'s `port`, declared HTTP by a Service port of this name and appProtocol. */
async function plaintextListener(t: TestContext, pod: ReturnType<typeof workload>, port: number, declared: { name: string; appProtocol: string }, headTimeoutMs?: number) {
  const service: Service = {
    namespace: 'shop', name: 'inventory', vips: ['10.96.0.20'], ports: [{ ...declared, port: 80, targetPort: port, targetPortName: '' }],
    endpoints: [{ workloadUid: pod.uid, ip: pod.ip, ready: true }], opaquePorts: [],
  };
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [pod], services: [service] });
  const metrics = createMetrics(new Registry());
  const httpInbound = new HttpInbound(new Admission(config, metrics), metrics);
  if (headTimeoutMs !== undefined) httpInbound.headTimeoutMs = headTimeoutMs;
  const listener = await InboundPlaintextListener.bind({
    config, tracker: new ConnectionTracker(metrics), admission: new Admission(config, metrics), balancer: new LoadBalancer(), http: httpInbound,
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: pod.ip, port }),
  });
  t.after(() => listener.close());
  return listener;
}

test('half a request head to a declared HTTP port at 15006 is closed at the head deadline, not held forever', async (t) => {
  const DEADLINE = 300;
  const pod = workload('inventory', '127.0.0.5', 'n1');
  const app = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => app.listen(0, pod.ip, resolve));
  t.after(() => {
    app.closeAllConnections();
    app.close();
  });
  const listener = await plaintextListener(t, pod, (app.address() as AddressInfo).port, { name: 'http', appProtocol: '' }, DEADLINE);
  const lifetime = (send: (s: net.Socket) => void) => new Promise<{ ms: number; got: string }>((resolve) => {
    const started = Date.now();
    let got = '';
    const s = net.connect(listener.port, '127.0.0.1', () => send(s));
    s.on('data', (c) => (got += c));
    s.on('error', () => {});
    s.once('close', () => resolve({ ms: Date.now() - started, got }));
  });
  const [half, idleAfterResponse, h2NoSettings] = await Promise.all([
    lifetime((s) => s.write('GET / HTTP/1.1\r\nhost: inventory\r\n')),
    lifetime((s) => s.write('GET / HTTP/1.1\r\nhost: inventory\r\n\r\n')),
    lifetime((s) => s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')),
  ]);
  for (const [what, r] of Object.entries({ half, idleAfterResponse, h2NoSettings })) {
    assert.ok(r.ms >= DEADLINE - 20 && r.ms < DEADLINE + 3000, `${what}: closed after ${r.ms} ms with a ${DEADLINE} ms deadline`);
  }
  assert.match(idleAfterResponse.got, /^HTTP\/1\.1 200/, 'a complete request is answered first');
  assert.equal(half.got, '');
});

test('an HBONE session left with no open stream is closed with a GOAWAY after the idle timeout; one carrying a tunnel is not', async (t) => {
  const IDLE = 300;
  const { rawPeer, pool, request } = await setup(t, { idleTimeoutMs: IDLE });
  // A peer that completes TLS and the preface, then never opens a stream.
  const started = Date.now();
  const idle = rawPeer();
  const goaway = new Promise<number>((resolve) => idle.once('goaway', (code: number) => resolve(code)));
  const closed = new Promise<number>((resolve) => idle.once('close', () => resolve(Date.now() - started)));
  assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR, 'a graceful GOAWAY');
  const lived = await closed;
  assert.ok(lived >= IDLE - 20 && lived < IDLE + 3000, `an idle session lived ${lived} ms with a ${IDLE} ms idle timeout`);

  // A session whose tunnel stays open outlives the timeout; once its last tunnel closes, it is idle again.
  const tunnel = await pool.connect(request());
  assert.equal(pool.size, 1);
  await new Promise((r) => setTimeout(r, IDLE * 2));
  assert.equal(tunnel.destroyed, false, 'an open tunnel keeps its session');
  assert.equal(pool.size, 1);
  const echoed = new Promise<string>((resolve) => tunnel.once('data', (c: Buffer) => resolve(c.toString())));
  tunnel.write('still here');
  assert.equal(await echoed, 'still here');
  const closedAt = Date.now();
  tunnel.destroy();
  // The pool's own idle timeout is a minute: the listener's GOAWAY is what empties it.
  while (pool.size > 0) {
    assert.ok(Date.now() - closedAt < IDLE + 3000, 'the session is closed after its last tunnel');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(Date.now() - closedAt >= IDLE - 20, 'not before the idle timeout');
  // The next tunnel opens a new session.
  const next = await pool.connect(request());
  assert.equal(pool.size, 1);
  next.destroy();
});

test('the pool closes a session that carried no tunnel for its idle timeout', async (t) => {
  const { pool, request } = await setup(t, { poolIdleTimeoutMs: 200 });
  const first = await pool.connect(request());
  const second = await pool.connect(request());
  assert.equal(pool.size, 1, 'both on one session');
  first.destroy();
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(pool.size, 1, 'a session with an open tunnel is kept');
  const closedAt = Date.now();
  second.destroy();
  while (pool.size > 0) {
    assert.ok(Date.now() - closedAt < 3000, 'an idle pooled session is closed');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(Date.now() - closedAt >= 180, 'not before its idle timeout');
});

test('HTTP/2 at 15006: past 1,000 concurrent streams on one connection a stream is refused with REFUSED_STREAM', async (t) => {
  const pod = workload('inventory', '127.0.0.5', 'n1');
  // The pod holds every stream until told to answer, so all are open at once.
  const held: http2.ServerHttp2Stream[] = [];
  let answer: (() => void) | undefined;
  const answering = new Promise<void>((resolve) => (answer = resolve));
  const app = http2.createServer();
  app.on('stream', (stream) => {
    held.push(stream);
    stream.on('error', () => {});
    void answering.then(() => !stream.destroyed && stream.respond({ ':status': 200 }, { endStream: true }));
  });
  await new Promise<void>((resolve) => app.listen(0, pod.ip, resolve));
  t.after(() => app.close());
  const listener = await plaintextListener(t, pod, (app.address() as AddressInfo).port, { name: 'http2', appProtocol: 'http2' });
  // A real HTTP/2 client that sends its requests before our SETTINGS arrive: it believes it may open 2,000.
  const session = http2.connect(`http://127.0.0.1:${listener.port}`, { peerMaxConcurrentStreams: 2000 });
  session.on('error', () => {});
  t.after(() => session.destroy());
  const answers = Array.from({ length: 1001 }, () => new Promise<{ status?: number; rstCode?: number }>((resolve) => {
    const req = session.request({ ':path': '/', ':method': 'GET' });
    req.on('error', () => {});
    req.once('response', (h) => resolve({ status: Number(h[':status']) }));
    req.once('close', () => resolve({ rstCode: req.rstCode }));
    req.resume();
  }));
  const last = await answers[1000]!;
  assert.equal(last.rstCode, http2.constants.NGHTTP2_REFUSED_STREAM, `the 1,001st: ${JSON.stringify(last)}`);
  while (held.length < 1000) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(held.length, 1000, 'the pod saw the first 1,000 and no more');
  assert.equal(session.remoteSettings.maxConcurrentStreams, 1000, 'the limit is advertised');
  answer!();
  const results = await Promise.all(answers.slice(0, 1000));
  assert.equal(results.filter((r) => r.status === 200).length, 1000, 'the first 1,000 are answered');
  // The connection goes on: once those closed, a new stream is served.
  const next = await new Promise<number>((resolve) => {
    const req = session.request({ ':path': '/', ':method': 'GET' });
    req.once('response', (h) => resolve(Number(h[':status'])));
    req.resume();
  });
  assert.equal(next, 200);
});

test('the destination node reads less from a remote source pod over its fair share: keyed by the verified source workload, not by the peer session', async (t) => {
  const throttled: { key: string; level: number }[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p) });
  t.after(() => fair.stop());
  const { pool, request } = await setup(t, { fairShare: fair });
  // Two pods of one identity on one node: their tunnels share a session.
  const noisy = await Promise.all([1, 2, 3, 4].map(() => pool.connect(request())));
  const quiet = await pool.connect(request({ forwardedFor: sibling.ip }));
  assert.equal(pool.size, 1);
  const echoes = (stream: http2.ClientHttp2Stream, within: number) => new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      stream.off('data', onData);
      resolve(false);
    }, within);
    const onData = () => {
      clearTimeout(timer);
      stream.off('data', onData);
      resolve(true);
    };
    stream.on('data', onData);
  });
  const round = (payload: Buffer | string, within: number) => Promise.all([...noisy, quiet].map((s) => {
    const echoed = echoes(s, within);
    s.write(payload);
    return echoed;
  }));
  fair.rebalance(FAIR_LAG_MS); // the baseline
  // The noisy pod sends 64 KiB on each of its tunnels, the quiet one a byte.
  await Promise.all(noisy.map((s) => new Promise<void>((resolve) => {
    let got = 0;
    const onData = (c: Buffer) => {
      if ((got += c.length) < 64 * 1024) return;
      s.off('data', onData);
      resolve();
    };
    s.on('data', onData);
    s.write(Buffer.alloc(64 * 1024));
  })));
  assert.deepEqual(await round('q', 2000).then((r) => r.at(-1)), true);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled, [[{ key: `${client.namespace}/${client.name}`, level: 1 }]], 'the noisy pod alone, by its workload');
  // Level 1: half of the noisy pod's tunnels get their answers; the quiet pod's tunnel does.
  const answered = await round('x', 300);
  assert.equal(answered.slice(0, 4).filter(Boolean).length, 2, `noisy tunnels answered: ${answered.slice(0, 4)}`);
  assert.equal(answered[4], true, 'the quiet pod is answered');
  // Stopped, every tunnel's answer comes.
  const held = noisy.filter((_, i) => !answered[i]).map((s) => echoes(s, 2000));
  fair.stop();
  assert.deepEqual(await Promise.all(held), [true, true]);
  [...noisy, quiet].forEach((s) => s.destroy());
});

test('plaintext TCP at 15006 is read under its source: the heavier of two clients is read less', async (t) => {
  const throttled: { key: string; level: number }[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p) });
  t.after(() => fair.stop());
  const { config, tracker, echo } = await setup(t);
  const metrics = createMetrics(new Registry());
  const listener = await InboundPlaintextListener.bind({
    config, tracker, admission: new Admission(config, metrics), balancer: new LoadBalancer(), fairShare: fair,
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: '127.0.0.1', port: echo.port }),
  });
  t.after(() => listener.close());
  // Clients from outside the mesh, by their addresses: one heavy, one light.
  const open = (localAddress: string) => new Promise<net.Socket>((resolve) => {
    const s = net.connect({ port: listener.port, host: '127.0.0.1', localAddress }, () => resolve(s));
    s.on('error', () => {});
    t.after(() => s.destroy());
  });
  const echoed = (s: net.Socket, bytes: number) => new Promise<void>((resolve) => {
    let got = 0;
    const onData = (c: Buffer) => {
      if ((got += c.length) < bytes) return;
      s.off('data', onData);
      resolve();
    };
    s.on('data', onData);
  });
  const heavy = await Promise.all([1, 2].map(() => open('127.0.0.7')));
  const light = await open('127.0.0.8');
  const all = [...heavy, light];
  await Promise.all(all.map((s) => {
    const done = echoed(s, 1);
    s.write('x');
    return done;
  }));
  fair.rebalance(0); // the baseline
  await Promise.all(all.map((s) => {
    const bytes = s === light ? 1 : 64 * 1024;
    const done = echoed(s, bytes);
    s.write(Buffer.alloc(bytes));
    return done;
  }));
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled, [[{ key: 'ip:127.0.0.7', level: 1 }]]);
});
