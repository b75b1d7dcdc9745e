// End-to-end L4 traffic on a real two-node mesh: the real control plane and one
// `nodemesh node` per node namespace, pods captured by iptables, HBONE between the
// nodes. Needs root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterSpec } from './cluster/plan.ts';
import { openConnection } from './cluster/servers.ts';
import { adminGet, scrapeMetrics, startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';
import { attempt, expectAnswer, startLoggedGreeter, transfer, type LoggedGreeter } from './e2e/pod-apps.ts';
import { startCapture, tcpPackets } from './e2e/pcap.ts';
import { sumOf } from './e2e/prometheus.ts';

const PORT = 7000;
const CLIENT_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/client';
const SERVER_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/server';

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'server-a', namespace: 'shop', node: 'n2', labels: { app: 'server' }, serviceAccount: 'server' },
    { name: 'server-b', namespace: 'shop', node: 'n2', labels: { app: 'server' }, serviceAccount: 'server' },
    // A second enrolled client, on the servers' node: the same-node path.
    { name: 'neighbour', namespace: 'shop', node: 'n2', serviceAccount: 'neighbour' },
    // Outside the mesh: its traffic crosses the underlay in clear.
    { name: 'outsider', namespace: 'legacy', node: 'n1' },
  ],
  services: [{ name: 'server', namespace: 'shop', selector: { app: 'server' }, ports: [{ port: PORT }] }],
};

let fx: MeshFixture;
const servers = new Map<string, LoggedGreeter>();

before(async () => {
  fx = await startMeshFixture(SPEC, 'traffic');
  for (const name of ['server-a', 'server-b']) servers.set(name, await startLoggedGreeter(fx.cluster, `shop/${name}`, PORT));
});
after(() => fx?.teardown());

const ip = (pod: string) => fx.cluster.pod(pod).ip;
const vip = () => fx.cluster.service('shop/server').clusterIP;
const accepted = (server: string) => servers.get(server)!.accepted();

/** An entry of a node's admin /connections. */
interface Connection {
  listener: string;
  security: string;
  source: { ip: string; identity: string | null };
  destination: { workload: string | null };
}

test(cniTitle('an enrolled client on n1 reaches both server pod IPs and the Service VIP on n2, payload echoed intact'), async () => {
  const text = `ping ${randomBytes(6).toString('hex')}`;
  for (const server of ['server-a', 'server-b']) {
    const answer = await expectAnswer(await attempt(fx.cluster, 'shop/client', ip(`shop/${server}`), PORT, text), `client -> ${server}`, fx.mesh);
    assert.equal(answer, `hello from ${server}\n${text}`);
  }
  const viaVip = await expectAnswer(await attempt(fx.cluster, 'shop/client', vip(), PORT, text), 'client -> Service VIP', fx.mesh);
  assert.match(viaVip, new RegExp(`^hello from server-[ab]\\n${text}$`));
});

test(cniTitle('64 MiB through the Service VIP come back byte for byte (sha256 of what was sent and what was echoed)'), async () => {
  const bytes = 64 * 1024 * 1024;
  const result = await transfer(fx.cluster, 'shop/client', vip(), PORT, bytes);
  assert.match(result.greeting ?? '', /^hello from server-[ab]$/);
  assert.equal(result.sentBytes, bytes);
  assert.equal(result.receivedBytes, bytes);
  assert.equal(result.receivedSha256, result.sentSha256);
});

test(cniTitle('20 connections to the Service VIP are balanced by n1\'s daemon and spread over both endpoints'), async () => {
  // Capture runs before kube-proxy's DNAT: the source daemon sees the VIP and reports the Service.
  const bySource = { reporter: 'source', source_principal: CLIENT_PRINCIPAL, destination_service: 'server.shop.svc.cluster.local' };
  const balanced = async () => sumOf(await scrapeMetrics(fx.cluster, 'n1'), 'nodemesh_tcp_connections_opened_total', bySource);
  const balancedBefore = await balanced();
  const before = { a: accepted('server-a'), b: accepted('server-b') };
  const seen = new Map<string, number>();
  for (let i = 0; i < 20; i++) {
    const res = await attempt(fx.cluster, 'shop/client', vip(), PORT, '');
    assert.ok(res.ok, `connection ${i} to the VIP: ${res.error}`);
    seen.set(res.output, (seen.get(res.output) ?? 0) + 1);
  }
  assert.deepEqual([...seen.keys()].sort(), ['hello from server-a\n', 'hello from server-b\n'], `answers: ${JSON.stringify(Object.fromEntries(seen))}`);
  // Each answer came from a connection the server accepted: nothing was answered by anyone else.
  assert.equal(accepted('server-a') - before.a, seen.get('hello from server-a\n'));
  assert.equal(accepted('server-b') - before.b, seen.get('hello from server-b\n'));
  assert.equal(await balanced() - balancedBefore, 20);
});

test(cniTitle('on the underlay, meshed traffic is TCP to port 15008 only and its payload never appears in clear'), async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemesh-e2e-pcap-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const n1 = fx.cluster.node('n1');
  const capture = await startCapture(fx.cluster, n1.netns, 'eth0', join(dir, 'n1-eth0.pcap'));
  const secret = `meshed-marker-${randomBytes(8).toString('hex')}`;
  const clear = `plaintext-marker-${randomBytes(8).toString('hex')}`;
  let pcap: Buffer;
  try {
    for (const host of [ip('shop/server-a'), ip('shop/server-b'), vip()]) {
      const res = await attempt(fx.cluster, 'shop/client', host, PORT, secret);
      assert.ok(res.ok && res.output.endsWith(secret), `client -> ${host}: ${res.error || res.output}`);
    }
    // The control: a pod outside the mesh talks in clear, so the capture does see payloads.
    const control = await attempt(fx.cluster, 'legacy/outsider', ip('shop/server-a'), PORT, clear);
    assert.ok(control.ok && control.output.endsWith(clear), `outsider -> server-a: ${control.error || control.output}`);
  } finally {
    pcap = await capture.stop();
  }

  assert.ok(pcap.includes(clear), 'the plaintext control marker must be visible in the capture');
  assert.equal(pcap.indexOf(secret), -1, 'the meshed marker crossed the underlay in clear');
  const controlPlane = fx.cluster.controlPlane.ip;
  const outsider = ip('legacy/outsider');
  const meshed = tcpPackets(pcap).filter((s) => ![s.src, s.dst].some((a) => a === controlPlane || a === outsider));
  const serverIps = new Set([ip('shop/server-a'), ip('shop/server-b')]);
  const offPort = meshed.filter((s) => !((s.dstPort === 15008 && serverIps.has(s.dst)) || (s.srcPort === 15008 && serverIps.has(s.src))));
  assert.deepEqual(offPort.map((s) => `${s.src}:${s.srcPort} > ${s.dst}:${s.dstPort}`), [], 'meshed packets not to or from a server pod\'s port 15008');
  assert.ok(meshed.some((s) => s.payload.length > 0 && s.dstPort === 15008), 'no HBONE data seen on the underlay');
});

test(cniTitle('the server pods see the tunnelled connections, and n2 reports the client\'s principal over mutual TLS'), async (t) => {
  const series = { reporter: 'destination', source_principal: CLIENT_PRINCIPAL, destination_principal: SERVER_PRINCIPAL, connection_security_policy: 'mutual_tls' };
  const opened = async () => sumOf(await scrapeMetrics(fx.cluster, 'n2'), 'nodemesh_tcp_connections_opened_total', series);
  const openedBefore = await opened();
  const acceptedBefore = accepted('server-a');
  const connections = 5;
  for (let i = 0; i < connections; i++) {
    const res = await attempt(fx.cluster, 'shop/client', ip('shop/server-a'), PORT, `n${i}`);
    assert.ok(res.ok, `connection ${i}: ${res.error}`);
  }
  assert.equal(accepted('server-a') - acceptedBefore, connections, 'server-a accepted one connection per client connection');
  assert.equal(await opened() - openedBefore, connections, 'n2 counts each tunnelled connection with the client\'s principal and mutual_tls');

  // While a tunnel is open, n2 lists it with the client's own pod IP (carried in Forwarded) and principal.
  const conn = await openConnection(fx.cluster, fx.cluster.pod('shop/client').netns, ip('shop/server-a'), PORT);
  t.after(() => conn.close());
  await conn.roundTrip('tunnelled');
  const inbound = (await adminGet<Connection[]>(fx.cluster, 'n2', '/connections')).filter((c) => c.listener === 'inbound');
  const described = new Set(inbound.map((c) => JSON.stringify([c.source.ip, c.source.identity, c.destination.workload, c.security])));
  assert.deepEqual([...described], [JSON.stringify([ip('shop/client'), 'spiffe://cluster.local/ns/shop/sa/client', 'shop/server-a', 'mutual_tls'])]);
});

test(cniTitle('a second enrolled client on n2 reaches server-a on the same-node path, authorized as itself'), async (t) => {
  const text = 'same node';
  const answer = await expectAnswer(await attempt(fx.cluster, 'shop/neighbour', ip('shop/server-a'), PORT, text), 'neighbour -> server-a', fx.mesh);
  assert.equal(answer, `hello from server-a\n${text}`);

  const conn = await openConnection(fx.cluster, fx.cluster.pod('shop/neighbour').netns, ip('shop/server-a'), PORT);
  t.after(() => conn.close());
  await conn.roundTrip('still here');
  const open = await adminGet<Connection[]>(fx.cluster, 'n2', '/connections');
  const sameNode = open.filter((c) => c.listener === 'same-node');
  assert.equal(sameNode.length, 1, `n2 connections: ${JSON.stringify(open)}`);
  assert.equal(sameNode[0]!.source.identity, 'spiffe://cluster.local/ns/shop/sa/neighbour');
  assert.equal(sameNode[0]!.destination.workload, 'shop/server-a');
  assert.equal(sameNode[0]!.security, 'mutual_tls');
});
