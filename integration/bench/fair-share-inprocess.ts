// The fair share (daemon/fair-share.ts) alone, in one process on loopback: a
// proxy that splices each connection to an echo server (20 µs of work per read,
// standing in for parsing and TLS), 500 connections of one source ping-ponging
// as fast as they can and one quiet connection sending every 10 ms, for 3 s,
// with the fair share off and on:
// `node integration/bench/fair-share-inprocess.ts off|on`. Prints the quiet
// connection's p50 and p99, the flood's round trips per second and the ticks in
// which a source was throttled.

import net from 'node:net';
import { splice } from '../../daemon/splice.ts';
import { FairShare } from '../../daemon/fair-share.ts';

const useFair = process.argv[2] === 'on';
const FLOOD_CONNECTIONS = 500;
const SECONDS = 3;

const echo = net.createServer((s) => s.pipe(s));
await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
const echoPort = (echo.address() as net.AddressInfo).port;
let throttles = 0;
const fair = new FairShare({ onThrottle: () => throttles++ });
if (useFair) fair.start();
let accepted = 0;
const proxy = net.createServer((client) => {
  const upstream = net.connect(echoPort, '127.0.0.1');
  fair.register(accepted++ === 0 ? 'quiet' : 'noisy', client);
  client.on('data', () => {
    const until = performance.now() + 0.02;
    while (performance.now() < until);
  });
  splice(client, upstream, () => {});
});
await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
const port = (proxy.address() as net.AddressInfo).port;
const quiet = net.connect(port, '127.0.0.1');
await new Promise((r) => quiet.once('connect', r));
const latencies: number[] = [];
let sentAt = 0;
quiet.on('data', () => latencies.push(performance.now() - sentAt));
let roundTrips = 0;
for (let i = 0; i < FLOOD_CONNECTIONS; i++) {
  const c = net.connect(port, '127.0.0.1', () => c.write('ping'));
  c.on('data', () => {
    roundTrips++;
    c.write('ping');
  });
}
const sender = setInterval(() => {
  sentAt = performance.now();
  quiet.write('q');
}, 10);
await new Promise((r) => setTimeout(r, SECONDS * 1000));
clearInterval(sender);
latencies.sort((a, b) => a - b);
const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]?.toFixed(1);
console.log(JSON.stringify({ fairShare: useFair ? 'on' : 'off', quiet_p50_ms: Number(at(0.5)), quiet_p99_ms: Number(at(0.99)), flood_round_trips_per_s: Math.round(roundTrips / SECONDS), throttled_ticks: throttles }));
process.exit(0);
