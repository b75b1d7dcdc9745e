// Runs INSIDE a network namespace (started by listeners.test.ts under `ip netns
// exec`): two data planes (nodes n1 and n2) on 127.0.0.1 with real iptables
// REDIRECT rules, so the listeners read real SO_ORIGINAL_DST values. Pod IPs are
// loopback addresses; capture rules sit in nat OUTPUT (everything here is
// locally originated) and skip source 127.0.0.1, which is what the daemons dial from.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { ConfigStore } from '../config-store.ts';
import type { Service } from '../../core/types.ts';
import { startDaemon } from '../daemon.ts';
import type { Daemon } from '../daemon.ts';
import { originalDestination } from '../original-dst.ts';
import { MemoryCertSource, applyConfig, denyFrom, echoServer, spiffe, workload } from './mesh-fixture.ts';

const A = workload('frontend', '127.10.0.2', 'n1', { namespace: 'web' });
const B = workload('cart', '127.10.0.3', 'n1', { namedPorts: { http: 8080 } });
const C = workload('payments', '127.10.0.4', 'n2');
const D = workload('legacy', '127.10.0.5', 'n1', { enrolled: false });
const S = workload('vault', '127.10.0.6', 'n1', { namespace: 'vault', mtlsMode: 'strict' });
const OUTSIDER = '127.10.9.9';
const cartSvc: Service = {
  namespace: 'shop', name: 'cart', vips: ['127.10.1.1'], opaquePorts: [],
  ports: [{ name: 'http', port: 80, targetPort: 0, targetPortName: 'http', appProtocol: '' }],
  endpoints: [{ workloadUid: B.uid, ip: B.ip, ready: true }],
};
const paymentsSvc: Service = {
  namespace: 'shop', name: 'payments', vips: ['127.10.1.2'], opaquePorts: [],
  ports: [{ name: 'tcp', port: 80, targetPort: 9090, targetPortName: '', appProtocol: '' }],
  endpoints: [{ workloadUid: C.uid, ip: C.ip, ready: true }],
};
const everything = { workloads: [A, B, C, D, S], services: [cartSvc, paymentsSvc] };

const n1 = new ConfigStore('n1');
const n2 = new ConfigStore('n2');
const registry1 = new Registry();
let d1: Daemon;
let d2: Daemon;
const cleanups: (() => Promise<void>)[] = [];

function iptables(...args: string[]): void {
  execFileSync('iptables', ['-w', '-t', 'nat', ...args]);
}

before(async () => {
  const ca = await createMeshCa();
  const certs1 = await MemoryCertSource.issuing(ca, [spiffe(A), spiffe(B), spiffe(S)]);
  const certs2 = await MemoryCertSource.issuing(ca, [spiffe(C)]);
  applyConfig(n1, everything);
  applyConfig(n2, everything);
  for (const [ip, port] of [[B.ip, 8080], [C.ip, 9090], [D.ip, 7070], [S.ip, 6060]] as const) {
    cleanups.push((await echoServer(ip, port)).close);
  }
  d1 = await startDaemon({ config: n1, certs: certs1, registry: registry1, bindHost: '127.0.0.1', ports: { outbound: 0, inboundPlaintext: 0, inbound: 0 } });
  cleanups.push(() => d1.stop());
  d2 = await startDaemon({ config: n2, certs: certs2, registry: new Registry(), bindHost: '127.0.0.1', ports: { outbound: 0, inboundPlaintext: 0, inbound: 0 } });
  cleanups.push(() => d2.stop());
  // Order matters: pod A's outbound first, then HBONE to each node, then plaintext inbound.
  iptables('-A', 'OUTPUT', '-p', 'tcp', '-s', A.ip, '-j', 'REDIRECT', '--to-ports', String(d1.ports.outbound));
  iptables('-A', 'OUTPUT', '-p', 'tcp', '-d', C.ip, '--dport', '15008', '-j', 'REDIRECT', '--to-ports', String(d2.ports.inbound));
  for (const pod of [B, S]) {
    iptables('-A', 'OUTPUT', '-p', 'tcp', '-d', pod.ip, '--dport', '15008', '-j', 'REDIRECT', '--to-ports', String(d1.ports.inbound));
    iptables('-A', 'OUTPUT', '-p', 'tcp', '!', '-s', '127.0.0.1', '-d', pod.ip, '-j', 'REDIRECT', '--to-ports', String(d1.ports.inboundPlaintext));
  }
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Connects from `from` to ip:port, sends `payload`, half-closes and collects the reply. */
function exchange(from: string, ip: string, port: number, payload: string): Promise<{ reply: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: ip, port, localAddress: from, allowHalfOpen: true });
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (reply += c));
    socket.on('error', (err) => resolve({ reply, error: (err as NodeJS.ErrnoException).code ?? err.message }));
    socket.on('close', () => resolve({ reply }));
    socket.on('connect', () => socket.end(payload));
  });
}

function openTunnel(from: string, ip: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ip, port, localAddress: from });
    socket.once('error', reject);
    // One echoed byte proves the whole path is up.
    socket.once('connect', () => socket.write('.'));
    socket.once('data', () => resolve(socket));
  });
}

test('originalDestination: the pre-REDIRECT address, null for a direct dial', async (t) => {
  const seen: ({ ip: string; port: number } | null)[] = [];
  const server = net.createServer((s) => {
    seen.push(originalDestination(s));
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  iptables('-A', 'OUTPUT', '-p', 'tcp', '-d', '127.10.7.7', '--dport', '7', '-j', 'REDIRECT', '--to-ports', String(port));
  t.after(() => iptables('-D', 'OUTPUT', '-p', 'tcp', '-d', '127.10.7.7', '--dport', '7', '-j', 'REDIRECT', '--to-ports', String(port)));
  await exchange('127.0.0.1', '127.10.7.7', 7, '');
  await exchange('127.0.0.1', '127.0.0.1', port, '');
  assert.deepEqual(seen, [{ ip: '127.10.7.7', port: 7 }, null]);
});

test('same node: a Service VIP is balanced to the local endpoint on its named target port', async () => {
  assert.deepEqual(await exchange(A.ip, '127.10.1.1', 80, 'to cart'), { reply: 'to cart' });
  const metrics = await registry1.metrics();
  assert.match(metrics, /nodemesh_tcp_connections_closed_total\{reporter="source",source_workload="frontend",.*destination_workload="cart",.*destination_service="cart.shop.svc.cluster.local",connection_security_policy="mutual_tls"\} 1/);
  assert.match(metrics, /nodemesh_tcp_connections_closed_total\{reporter="destination",source_workload="frontend",.*destination_workload="cart",/);
});

test('other node: HBONE to the destination daemon, which sees the source identity and IP', async () => {
  const socket = await openTunnel(A.ip, '127.10.1.2', 80);
  try {
    const onN2 = d2.connections() as { listener: string; source: { ip: string; principal: string }; destination: { ip: string; port: number } }[];
    assert.equal(onN2.length, 1);
    assert.equal(onN2[0]!.listener, 'inbound');
    assert.deepEqual(onN2[0]!.source, { ip: A.ip, workload: 'web/frontend', identity: 'spiffe://cluster.local/ns/web/sa/frontend' });
    assert.deepEqual(onN2[0]!.destination.port, 9090);
    const onN1 = d1.connections() as { listener: string; security: string }[];
    assert.deepEqual(onN1.map((c) => [c.listener, c.security]), [['outbound', 'mutual_tls']]);
  } finally {
    socket.destroy();
  }
  assert.deepEqual(await exchange(A.ip, C.ip, 9090, 'direct to pod'), { reply: 'direct to pod' });
});

test('a destination that is not enrolled passes through in plaintext', async () => {
  assert.deepEqual(await exchange(A.ip, D.ip, 7070, 'legacy'), { reply: 'legacy' });
  assert.match(await registry1.metrics(), /nodemesh_tcp_connections_closed_total\{reporter="source",.*destination_workload="legacy",.*connection_security_policy="none"\} 1/);
});

test('plaintext from outside the mesh: accepted when permissive, refused when strict', async () => {
  assert.deepEqual(await exchange(OUTSIDER, B.ip, 8080, 'hello cart'), { reply: 'hello cart' });
  const strict = await exchange(OUTSIDER, S.ip, 6060, 'hello vault');
  assert.equal(strict.reply, '');
  assert.match(await registry1.metrics(), /nodemesh_tcp_connections_denied_total\{reporter="destination",destination_workload="vault",destination_workload_namespace="vault",source_principal="unknown",reason="strict_mtls"\} 1/);
});

test('a policy change on the destination node closes the tunnels it denies', async () => {
  const socket = await openTunnel(A.ip, C.ip, 9090);
  const closed = new Promise((resolve) => socket.once('close', resolve));
  socket.on('error', () => {});
  applyConfig(n2, { ...everything, policies: [denyFrom('shop', 'no-web', 'web')] }, 2);
  await closed;
  // New tunnels are refused too; the client sees its connection reset.
  const refused = await exchange(A.ip, C.ip, 9090, 'again');
  assert.equal(refused.reply, '');
  applyConfig(n2, everything, 3);
});

test('drain: stops accepting, then closes what is left at the deadline', async () => {
  const socket = await openTunnel(A.ip, B.ip, 8080);
  socket.on('error', () => {});
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const started = Date.now();
  await d1.drain(300);
  await closed;
  assert.ok(Date.now() - started >= 290, 'waited for the deadline');
  assert.equal(d1.connections().length, 0);
  const after = await exchange(A.ip, B.ip, 8080, 'late');
  assert.equal(after.reply, '');
});
