// Per source pod limits and the fair share, on real sockets: an outbound listener
// on loopback told the original destination (an echo server outside the mesh,
// so connections pass through), with two local pods as sources at 127.0.0.2
// (noisy) and 127.0.0.6 (quiet).

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { Registry } from 'prom-client';
import { ConfigStore } from './config-store.ts';
import { createMetrics } from './metrics.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import { LoadBalancer } from './load-balancer.ts';
import { HbonePool } from './hbone-pool.ts';
import { Admission } from './admission.ts';
import { OutboundListener } from './outbound.ts';
import { SourceLimits } from './source-limits.ts';
import { FAIR_LAG_MS, FairShare, levelsFor, PRESSURE_CONTENDED } from './fair-share.ts';
import { Tap } from './tap.ts';
import { createOutboundHttp } from './l7/outbound-http.ts';
import { applyConfig, echoServer, MemoryCertSource, workload } from './testdata/mesh-fixture.ts';
import { logger } from '../core/log.ts';
import type { Service, Workload } from '../core/types.ts';

const ECHO_IP = '127.0.0.9';

async function setup(t: TestContext, workloads: Workload[], defaults: { maxConnections?: number; maxConcurrentRequests?: number }) {
  const echo = await echoServer(ECHO_IP);
  t.after(() => echo.close());
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads });
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const limits = new SourceLimits(metrics, logger('outbound'), defaults);
  t.after(() => limits.close());
  const outbound = await OutboundListener.bind({
    config, tracker: new ConnectionTracker(metrics), admission: new Admission(config, metrics), pool: new HbonePool({ certs: new MemoryCertSource('') }),
    balancer: new LoadBalancer(), host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: ECHO_IP, port: echo.port }), limits,
  });
  t.after(() => outbound.close());
  const denied = async (principal: string) => {
    const values = (await registry.getSingleMetric('nodemesh_tcp_connections_denied_total')!.get()).values;
    return values.filter((v) => v.labels.reason === 'source_limit' && v.labels.source_principal === principal).reduce((n, v) => n + v.value, 0);
  };
  /** Opens a connection from `ip` through the listener: 'echoed' when a byte comes back, 'reset' when refused. */
  const dial = (ip: string, held: net.Socket[]) => new Promise<'echoed' | 'reset'>((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: outbound.port, localAddress: ip }, () => socket.write('x'));
    t.after(() => socket.destroy());
    socket.once('data', () => {
      held.push(socket);
      resolve('echoed');
    });
    socket.once('error', () => resolve('reset'));
    socket.once('close', () => resolve('reset'));
  });
  return { limits, denied, dial };
}

test('a source pod over its connection cap is reset and counted as source_limit; another pod on the node is not', async (t) => {
  const noisy = workload('noisy', '127.0.0.2', 'n1');
  const quiet = workload('quiet', '127.0.0.6', 'n1');
  const { denied, dial, limits } = await setup(t, [noisy, quiet], { maxConnections: 3 });
  const noisyHeld: net.Socket[] = [];
  const quietHeld: net.Socket[] = [];
  const outcomes: string[] = [];
  for (let i = 0; i < 5; i++) outcomes.push(await dial(noisy.ip, noisyHeld));
  assert.deepEqual(outcomes, ['echoed', 'echoed', 'echoed', 'reset', 'reset']);
  assert.equal(await denied('spiffe://cluster.local/ns/shop/sa/noisy'), 2);
  // The quiet pod has its own count.
  for (let i = 0; i < 3; i++) assert.equal(await dial(quiet.ip, quietHeld), 'echoed');
  assert.equal(await denied('spiffe://cluster.local/ns/shop/sa/quiet'), 0);
  // A connection that closes frees its place.
  const closed = new Promise((resolve) => noisyHeld[0]!.once('close', resolve));
  noisyHeld[0]!.destroy();
  await closed;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(limits.usage(noisy.uid).connections, 2);
  assert.equal(await dial(noisy.ip, noisyHeld), 'echoed');
});

test('a pod\'s max-connections annotation replaces the node default for that pod only', async (t) => {
  const annotated = workload('batch', '127.0.0.2', 'n1', { maxConnections: 1 });
  const other = workload('web', '127.0.0.6', 'n1');
  const { denied, dial } = await setup(t, [annotated, other], { maxConnections: 2 });
  const held: net.Socket[] = [];
  assert.equal(await dial(annotated.ip, held), 'echoed');
  assert.equal(await dial(annotated.ip, held), 'reset');
  assert.equal(await denied('spiffe://cluster.local/ns/shop/sa/batch'), 1);
  assert.equal(await dial(other.ip, held), 'echoed');
  assert.equal(await dial(other.ip, held), 'echoed');
  assert.equal(await dial(other.ip, held), 'reset');
});

test('concurrent requests of a pod past its cap are refused with the reason; a released slot is reused, other pods are unaffected', () => {
  const registry = new Registry();
  const limits = new SourceLimits(createMetrics(registry), logger('outbound'), { maxConcurrentRequests: 2 });
  const noisy = workload('noisy', '127.0.0.2', 'n1');
  const annotated = workload('quiet', '127.0.0.6', 'n1', { maxConcurrentRequests: 3 });
  const a = limits.startRequest(noisy, 'id-noisy');
  const b = limits.startRequest(noisy, 'id-noisy');
  const refused = limits.startRequest(noisy, 'id-noisy');
  assert.equal(typeof a, 'function');
  assert.equal(typeof b, 'function');
  assert.match(String(refused), /source pod shop\/noisy has 2 HTTP requests in flight \(limit 2\)/);
  for (let i = 0; i < 3; i++) assert.equal(typeof limits.startRequest(annotated, 'id-quiet'), 'function');
  assert.equal(typeof limits.startRequest(annotated, 'id-quiet'), 'string');
  (a as () => void)();
  (a as () => void)(); // a second release is ignored
  assert.equal(limits.usage(noisy.uid).requests, 1);
  assert.equal(typeof limits.startRequest(noisy, 'id-noisy'), 'function');
  limits.close();
});

test('a refusal past a pod\'s cap is on the tap, every one, while the log sums them', () => {
  const tap = new Tap();
  const events: Record<string, unknown>[] = [];
  const stop = tap.subscribe((e) => events.push(e), { workload: 'noisy' });
  const limits = new SourceLimits(createMetrics(new Registry()), logger('outbound'), { maxConcurrentRequests: 1, tap });
  const noisy = workload('noisy', '127.0.0.2', 'n1');
  limits.startRequest(noisy, 'id-noisy');
  for (let i = 0; i < 3; i++) assert.equal(typeof limits.startRequest(noisy, 'id-noisy'), 'string');
  assert.equal(events.length, 3);
  assert.deepEqual({ ...events[0], time: undefined }, {
    time: undefined, event: 'refusal', reporter: 'source', what: 'HTTP request', reason: 'source_limit',
    message: 'source pod shop/noisy has 1 HTTP requests in flight (limit 1)',
    source: { ip: '127.0.0.2', workload: 'shop/noisy', identity: 'id-noisy' },
  });
  stop();
  limits.close();
});

test('an HTTP request past its pod\'s concurrent-request cap gets 503 with the reason; another pod\'s request on the same node goes through', async (t) => {
  const noisy = workload('noisy', '127.0.0.2', 'n1', { maxConcurrentRequests: 2 });
  const quiet = workload('quiet', '127.0.0.6', 'n1');
  const api = workload('api', '127.0.0.7', 'n1');
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => (req.url === '/hold' ? held.push(res) : res.end('fast')));
  await new Promise<void>((r) => server.listen(0, api.ip, () => r()));
  t.after(() => {
    held.forEach((r) => r.end());
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const svc: Service = {
    namespace: 'shop', name: 'api', vips: ['10.96.0.50'], ports: [{ name: 'http', port: 80, targetPort: port, targetPortName: '', appProtocol: 'http' }],
    endpoints: [{ workloadUid: api.uid, ip: api.ip, ready: true }], opaquePorts: [],
  };
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [noisy, quiet, api], services: [svc] });
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const limits = new SourceLimits(metrics, logger('outbound'));
  t.after(() => limits.close());
  const admission = new Admission(config, metrics);
  const pool = new HbonePool({ certs: new MemoryCertSource('') });
  const outboundHttp = createOutboundHttp({ config, pool, admission, metrics, limits });
  t.after(() => outboundHttp.close());
  const outbound = await OutboundListener.bind({
    config, tracker: new ConnectionTracker(metrics), admission, pool, balancer: new LoadBalancer(), http: outboundHttp,
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: '10.96.0.50', port: 80 }), limits,
  });
  t.after(() => outbound.close());
  const get = (from: string, path: string) => new Promise<{ status: number; reason: string; body: string }>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: outbound.port, path, localAddress: from, agent: false, headers: { host: 'api' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: String(res.headers['nodemesh-reason'] ?? ''), body }));
    });
    req.on('error', reject);
    t.after(() => req.destroy());
  });
  const first = get(noisy.ip, '/hold');
  const second = get(noisy.ip, '/hold');
  while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
  const third = await get(noisy.ip, '/hold');
  assert.equal(third.status, 503);
  assert.equal(third.reason, 'source_limit');
  assert.match(third.body, /source pod shop\/noisy has 2 HTTP requests in flight \(limit 2\)/);
  const other = await get(quiet.ip, '/');
  assert.equal(other.status, 200);
  assert.equal(other.body, 'fast');
  held.forEach((r) => r.end('done'));
  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
  // Slots come back with the responses.
  assert.equal((await get(noisy.ip, '/')).status, 200);
  const denied = (await registry.getSingleMetric('nodemesh_tcp_connections_denied_total')!.get()).values.filter((v) => v.labels.reason === 'source_limit');
  assert.equal(denied.reduce((n, v) => n + v.value, 0), 1);
});

test('refusals are logged at most once per pod per interval, with the count refused since', async () => {
  const lines: { msg: string; fields?: Record<string, unknown> }[] = [];
  const log = { ...logger('outbound'), warn: (msg: string, fields?: Record<string, unknown>) => lines.push({ msg, fields }) };
  const limits = new SourceLimits(createMetrics(new Registry()), log, { maxConcurrentRequests: 1, logIntervalMs: 100 });
  const pod = workload('noisy', '127.0.0.2', 'n1');
  limits.startRequest(pod, 'id');
  for (let i = 0; i < 50; i++) limits.startRequest(pod, 'id');
  assert.equal(lines.length, 1);
  assert.match(lines[0]!.msg, /^HTTP request refused: source pod shop\/noisy/);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(lines.length, 2);
  assert.match(lines[1]!.msg, /refused 49 more times in the last 0 s/);
  assert.equal(lines[1]!.fields?.refused, 49);
  limits.close();
});

/** A connected pair on loopback; the server side is what the proxy reads from. */
async function socketPair(t: TestContext): Promise<{ proxySide: net.Socket; app: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const app = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const proxySide = await accepted;
  server.close();
  t.after(() => {
    app.destroy();
    proxySide.destroy();
  });
  proxySide.on('data', () => {});
  return { proxySide, app };
}

const reading = (s: net.Socket) => (s as unknown as { _handle: { reading: boolean } })._handle.reading;

/** Until each socket has read at least its count of bytes. */
async function arrived(...expected: [net.Socket, number][]): Promise<void> {
  while (expected.some(([socket, bytes]) => socket.bytesRead < bytes)) await new Promise((r) => setTimeout(r, 5));
}

/** `count` connections of a source 'noisy' and one of a source 'quiet', registered with `fair`. */
async function noisyAndQuiet(t: TestContext, fair: FairShare, count: number) {
  const noisy = await Promise.all(Array.from({ length: count }, () => socketPair(t)));
  const quiet = await socketPair(t);
  for (const pair of noisy) fair.register('noisy', pair.proxySide);
  fair.register('quiet', quiet.proxySide);
  return { noisy, quiet };
}

/** noisyAndQuiet on a fair share of its own, with the noisy source's level at every throttling tick. */
async function watchedNoisyAndQuiet(t: TestContext, count: number) {
  const levels: number[] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => levels.push(p.find((s) => s.key === 'noisy')!.level) });
  return { fair, levels, ...await noisyAndQuiet(t, fair, count) };
}

/** 16 KiB on each of `heavy`, a byte on `light`; resolves once the sockets still reading have read theirs. */
async function sendRound(heavy: { app: net.Socket; proxySide: net.Socket }[], light?: { app: net.Socket; proxySide: net.Socket }): Promise<void> {
  const expected = heavy.filter((p) => reading(p.proxySide)).map((p): [net.Socket, number] => [p.proxySide, p.proxySide.bytesRead + 16 * 1024]);
  if (light) expected.push([light.proxySide, light.proxySide.bytesRead + 1]);
  for (const pair of heavy) pair.app.write(Buffer.alloc(16 * 1024));
  light?.app.write('q');
  await arrived(...expected);
}

test('under event-loop lag fewer of the heaviest source\'s sockets read each lagging tick; the quiet source keeps reading', async (t) => {
  const throttled: string[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p.map((s) => s.key)) });
  const { noisy, quiet } = await noisyAndQuiet(t, fair, 4);
  const sent = (pair: { app: net.Socket }, bytes: number) => new Promise<void>((r) => pair.app.write(Buffer.alloc(bytes), () => r()));
  const flood = async () => {
    // Only the sockets reading now can read what is sent.
    const expected = [...noisy.filter((p) => reading(p.proxySide)), quiet].map((p): [net.Socket, number] => [p.proxySide, p.proxySide.bytesRead + (p === quiet ? 100 : 64 * 1024)]);
    await Promise.all([...noisy.map((p) => sent(p, 64 * 1024)), sent(quiet, 100)]);
    await arrived(...expected);
  };
  const readingNoisy = () => noisy.filter((p) => reading(p.proxySide)).length;
  fair.rebalance(FAIR_LAG_MS); // the baseline
  await flood();
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled, [['noisy']]);
  // Level 1: half its capacity, half of its sockets.
  assert.equal(readingNoisy(), 2);
  assert.equal(reading(quiet.proxySide), true);
  await flood();
  fair.rebalance(FAIR_LAG_MS);
  // Level 2: a quarter.
  assert.equal(readingNoisy(), 1);
  assert.equal(reading(quiet.proxySide), true);
  // Stopping lets every socket read again.
  fair.stop();
  assert.equal(readingNoisy(), 4);
});

test('a socket the fair share stopped stays stopped when its reader restarts its handle (the HTTP server on resume), until the fair share starts it', async (t) => {
  const fair = new FairShare({ tickMs: 40 });
  const { noisy, quiet } = await noisyAndQuiet(t, fair, 4);
  fair.rebalance(FAIR_LAG_MS);
  await Promise.all(noisy.map((p) => new Promise<void>((r) => p.app.write(Buffer.alloc(64 * 1024), () => r()))));
  quiet.app.write('q');
  await arrived(...noisy.map((p): [net.Socket, number] => [p.proxySide, 64 * 1024]), [quiet.proxySide, 1]);
  fair.rebalance(FAIR_LAG_MS);
  const stopped = noisy.find((p) => !reading(p.proxySide))!;
  assert.ok(stopped, 'one of the four sockets is stopped at level 1');
  let received = 0;
  stopped.proxySide.on('data', (chunk: Buffer) => (received += chunk.length));
  // What node's HTTP server does when it resumes a socket it paused: the handle, directly.
  const handle = (stopped.proxySide as unknown as { _handle: { reading: boolean; readStart(): number } })._handle;
  handle.reading = true;
  handle.readStart();
  stopped.app.write('held back');
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(received, 0);
  assert.equal(reading(stopped.proxySide), false);
  fair.stop();
  while (received === 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(received, 'held back'.length);
});

test('a throttled source with one socket reads for its fraction of each tick', async (t) => {
  const fair = new FairShare({ tickMs: 40 });
  const noisy = await socketPair(t);
  const quiet = await socketPair(t);
  fair.register('noisy', noisy.proxySide);
  fair.register('quiet', quiet.proxySide);
  fair.rebalance(FAIR_LAG_MS);
  noisy.app.write(Buffer.alloc(64 * 1024));
  quiet.app.write(Buffer.alloc(10));
  await arrived([noisy.proxySide, 64 * 1024], [quiet.proxySide, 10]);
  fair.rebalance(FAIR_LAG_MS);
  assert.equal(reading(noisy.proxySide), true);
  // Level 1: half of the 40 ms tick.
  await new Promise((r) => setTimeout(r, 35));
  assert.equal(reading(noisy.proxySide), false);
  assert.equal(reading(quiet.proxySide), true);
  fair.stop();
  assert.equal(reading(noisy.proxySide), true);
});

test('without lag, or with one active source, nothing is paused', async (t) => {
  const fair = new FairShare({ tickMs: 40 });
  let paused = 0;
  const only = await socketPair(t);
  fair.register('only', only.proxySide);
  fair.rebalance(0);
  only.app.write(Buffer.alloc(64 * 1024));
  await arrived([only.proxySide, 64 * 1024]);
  fair.rebalance(100);
  paused += fair.pauses;
  const other = await socketPair(t);
  fair.register('other', other.proxySide);
  only.app.write(Buffer.alloc(64 * 1024));
  other.app.write(Buffer.alloc(10));
  await arrived([only.proxySide, 128 * 1024], [other.proxySide, 10]);
  fair.rebalance(0);
  paused += fair.pauses;
  assert.equal(paused, 0);
  assert.equal(reading(only.proxySide), true);
  fair.stop();
});

test('the levels a lagging tick adds grow with the lag: one per doubling over the threshold, so a flood is cut at its first contended tick', async (t) => {
  assert.equal(levelsFor(FAIR_LAG_MS, FAIR_LAG_MS), 1);
  assert.equal(levelsFor(FAIR_LAG_MS * 8, FAIR_LAG_MS), 3);
  assert.equal(levelsFor(FAIR_LAG_MS * 100, FAIR_LAG_MS), 7);
  const { fair, levels, noisy, quiet } = await watchedNoisyAndQuiet(t, 16);
  for (const pair of noisy) pair.app.write(Buffer.alloc(16 * 1024));
  quiet.app.write('q');
  await arrived(...noisy.map((p): [net.Socket, number] => [p.proxySide, 16 * 1024]), [quiet.proxySide, 1]);
  // One tick, with no calm tick before it having measured anything: eight times the threshold late.
  fair.rebalance(FAIR_LAG_MS * 8);
  assert.deepEqual(levels, [3]);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 2, 'an eighth of its sockets read');
  assert.equal(reading(quiet.proxySide), true);
  fair.stop();
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 16);
});

test('a late tick of a loop that was mostly idle (another process held the CPU) reads nobody less; the same lag from its own work does', async (t) => {
  const { fair, levels, noisy, quiet } = await watchedNoisyAndQuiet(t, 8);
  const flood = () => sendRound(noisy, quiet);
  await flood();
  // Eight times the threshold late, busy 10% of the interval: the lag was not ours.
  fair.rebalance(FAIR_LAG_MS * 8, 0.1);
  assert.equal(fair.pauses, 0);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 8);
  await flood();
  fair.rebalance(FAIR_LAG_MS * 8, 0.9);
  assert.deepEqual(levels, [3]);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 1);
  assert.equal(reading(quiet.proxySide), true);
  fair.stop();
});

test('a tick on which the proxy waited for a CPU reads the heaviest source less by two levels, even when it fired early; pressure on an idle loop reads nobody less', async (t) => {
  const { fair, levels, noisy, quiet } = await watchedNoisyAndQuiet(t, 8);
  const flood = () => sendRound(noisy, quiet);
  await flood();
  // Waiting for a CPU half the tick, while the loop itself was busy a tenth of it: not its work.
  fair.rebalance(0, 0.1, 0.5);
  assert.equal(fair.pauses, 0);
  await flood();
  // The same pressure on a loop busy 30% of the tick, which fired half a millisecond early
  // (regression: a negative lag made the level NaN, and the next tick threw on an undefined socket).
  fair.rebalance(-0.5, 0.3, 0.5);
  assert.deepEqual(levels, [2]);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 2, 'a quarter of its sockets read');
  assert.equal(reading(quiet.proxySide), true);
  fair.rebalance(-0.5, 0.3, 0.5);
  // Pressure alone goes no further than one of its eight sockets reading the whole tick.
  assert.deepEqual(levels, [2, 3]);
  fair.rebalance(-0.5, 0.3, 0.5);
  assert.deepEqual(levels, [2, 3, 3]);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 1);
  fair.stop();
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 8);
});

test('regression: sustained CPU pressure starved a heavy pod on one connection (level 12, a 4,096th of each tick); pressure alone now leaves it reading, lag still throttles it', async (t) => {
  const { fair, levels, noisy, quiet } = await watchedNoisyAndQuiet(t, 1);
  for (let tick = 0; tick < 8; tick++) {
    await sendRound(noisy, quiet);
    fair.rebalance(0, 1, 0.9);
    assert.equal(reading(noisy[0]!.proxySide), true);
  }
  assert.deepEqual(levels, []);
  assert.equal(fair.pauses, 0);
  await sendRound(noisy, quiet);
  fair.rebalance(FAIR_LAG_MS * 8, 1, 0.9);
  assert.deepEqual(levels, [3]);
  // Pressure alone does not hold the level lag took it to: back to reading the whole tick.
  await sendRound(noisy, quiet);
  fair.rebalance(0, 1, 0.9);
  assert.equal(fair.pauses, 1);
  assert.equal(reading(noisy[0]!.proxySide), true);
  fair.stop();
});

test('CPU pressure reads less only from sources whose requests this node reads, not a remote source\'s answers from a local pod (lag still does)', async (t) => {
  // Regression: a destination busy with a flood's new tunnels found the quiet pod's answers the heaviest and held them back.
  const throttled: string[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p.map((s) => s.key)) });
  const answers = await Promise.all(Array.from({ length: 4 }, () => socketPair(t)));
  const light = await socketPair(t);
  for (const pair of answers) fair.register('remote-quiet', pair.proxySide, 'answers');
  fair.register('remote-noisy', light.proxySide, 'answers');
  const answer = () => sendRound(answers, light);
  await answer();
  fair.rebalance(0, 1, 0.9);
  assert.equal(fair.pauses, 0);
  assert.equal(answers.filter((p) => reading(p.proxySide)).length, 4);
  await answer();
  fair.rebalance(FAIR_LAG_MS, 1, 0);
  assert.deepEqual(throttled, [['remote-quiet']]);
  fair.stop();
});

test('a throttled source climbs back only on ticks whose CPU pressure is under the calm share', async (t) => {
  const { fair, levels, noisy, quiet } = await watchedNoisyAndQuiet(t, 8);
  await sendRound(noisy, quiet);
  fair.rebalance(0, 0.5, 0.5);
  // Its sockets that still read keep it the heaviest: between calm and contended the level holds.
  const keepFlooding = () => sendRound(noisy);
  await keepFlooding();
  fair.rebalance(0, 0.5, PRESSURE_CONTENDED / 2);
  await keepFlooding();
  fair.rebalance(0, 0.5, 0);
  assert.deepEqual(levels, [2, 2, 2 - 1 / 8]);
  fair.stop();
});

test('a lone flood is read less when another source was connected within the memory, and not once that source is forgotten', async (t) => {
  const MEMORY = 150;
  const fair = new FairShare({ tickMs: 20, memoryMs: MEMORY });
  fair.start();
  t.after(() => fair.stop());
  const noisy = await Promise.all([1, 2, 3, 4].map(() => socketPair(t)));
  for (const pair of noisy) fair.register('noisy', pair.proxySide);
  const flood = async () => {
    const expected = noisy.filter((p) => reading(p.proxySide)).map((p): [net.Socket, number] => [p.proxySide, p.proxySide.bytesRead + 1024]);
    for (const pair of noisy) pair.app.write(Buffer.alloc(1024));
    await arrived(...expected);
  };
  // Alone: nobody to be fair to.
  await flood();
  fair.rebalance(FAIR_LAG_MS * 4);
  assert.equal(fair.pauses, 0);
  // A pod that connects per request: one request, and its connection is gone again.
  const quiet = await socketPair(t);
  fair.register('quiet', quiet.proxySide);
  quiet.app.end('GET / HTTP/1.1\r\n\r\n');
  await new Promise((r) => quiet.proxySide.once('close', r));
  assert.equal(fair.sources, 2, 'the pod that left still counts');
  await flood();
  fair.rebalance(FAIR_LAG_MS * 4);
  assert.equal(fair.pauses, 1, 'the flood is read less at once');
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 1);
  // Past the memory the pod is forgotten, and the flood, alone again, recovers level by level.
  while (fair.sources > 1) await new Promise((r) => setTimeout(r, 10));
  fair.stop();
  const pauses = fair.pauses;
  await flood();
  fair.rebalance(FAIR_LAG_MS * 4);
  assert.equal(fair.pauses, pauses, 'alone again: not paused');
});

test('a throttled source whose window read nothing in a tick keeps its demand: the quiet source beside it is not made the heavy one', async (t) => {
  const throttled: string[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p.map((s) => s.key)) });
  const { noisy, quiet } = await noisyAndQuiet(t, fair, 4);
  for (const pair of noisy) pair.app.write(Buffer.alloc(64 * 1024));
  quiet.app.write('q');
  await arrived(...noisy.map((p): [net.Socket, number] => [p.proxySide, 64 * 1024]), [quiet.proxySide, 1]);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled, [['noisy']]);
  // The noisy pod's window has nothing to read this time; the quiet pod sends its next request.
  quiet.app.write('q');
  await arrived([quiet.proxySide, 2]);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled.at(-1), ['noisy'], 'still the noisy pod alone');
  assert.equal(reading(quiet.proxySide), true);
  fair.stop();
});

test('a source throttled once that then reads under its share is back a level at the next tick, not after ten calm ones', async (t) => {
  const levels: Record<string, number>[] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => levels.push(Object.fromEntries(p.map((s) => [s.key, s.level]))) });
  const a = await Promise.all([1, 2].map(() => socketPair(t)));
  const b = await Promise.all([1, 2].map(() => socketPair(t)));
  for (const pair of a) fair.register('a', pair.proxySide);
  for (const pair of b) fair.register('b', pair.proxySide);
  const send = async (pairs: typeof a, bytes: number) => {
    const expected = pairs.filter((p) => reading(p.proxySide)).map((p): [net.Socket, number] => [p.proxySide, p.proxySide.bytesRead + bytes]);
    for (const pair of pairs) pair.app.write(Buffer.alloc(bytes));
    await arrived(...expected);
  };
  fair.rebalance(0);
  // For one tick 'a' is the heavier one, while the loop lags (a burst).
  await Promise.all([send(a, 64 * 1024), send(b, 1024)]);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(levels, [{ a: 1 }]);
  // Then 'b' is: 'a' reads under its share, the loop still lags (not calm).
  await Promise.all([send(a, 16), send(b, 256 * 1024)]);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(levels.at(-1), { b: 1 }, 'a is back to full speed at once; b is read less');
  assert.equal(a.filter((p) => reading(p.proxySide)).length, 2);
  fair.stop();
});

test('a throttled source\'s new connection reads through its first tick, outside the window', async (t) => {
  const fair = new FairShare({ tickMs: 40 });
  const { noisy, quiet } = await noisyAndQuiet(t, fair, 8);
  for (const pair of noisy) pair.app.write(Buffer.alloc(64 * 1024));
  quiet.app.write('q');
  await arrived(...noisy.map((p): [net.Socket, number] => [p.proxySide, 64 * 1024]), [quiet.proxySide, 1]);
  fair.rebalance(FAIR_LAG_MS * 8);
  assert.equal(noisy.filter((p) => reading(p.proxySide)).length, 1, 'level 3: one socket of eight');
  const late = await socketPair(t);
  fair.register('noisy', late.proxySide);
  // The next tick moves the window on; the new connection reads all the same, once.
  fair.rebalance(FAIR_LAG_MS);
  assert.equal(reading(late.proxySide), true, 'its first tick');
  fair.rebalance(FAIR_LAG_MS);
  const inWindow = reading(late.proxySide);
  assert.equal([...noisy, late].filter((p) => reading(p.proxySide)).length, 1, `then only the window reads (the new one ${inWindow ? 'is' : 'is not'} in it)`);
  fair.stop();
});
