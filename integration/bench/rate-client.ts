// Open-loop constant-rate HTTP/1.1 load (what wrk2 does): requests are scheduled
// by the wall clock at RATE per second over CONNECTIONS keep-alive connections,
// and each latency is measured from the request's intended send time, so a slow
// response delays nothing and hides nothing (no coordinated omission). A request
// whose time has come waits in a queue while every connection is busy; that wait
// counts. Prints one JSON line: sent, completed, errors, latency percentiles and
// its own CPU time.
// It spins (setImmediate) between sends, on a CPU of its own; with `sleep` it
// waits for each send time on a timer instead, for a CPU it shares with another
// load generator: spinning, it is always runnable and the scheduler shares the
// CPU by time slices, so a response waits for the other process's slice.
//
//   node rate-client.ts HOST PORT RATE SECONDS CONNECTIONS [sleep]

import net from 'node:net';
import { completeResponse } from './http-response.ts';

const [host, portText, rateText, secondsText, connectionsText, mode] = process.argv.slice(2);
if (!host || !portText || !rateText || !secondsText || !connectionsText) {
  console.error('usage: rate-client.ts HOST PORT RATE SECONDS CONNECTIONS [sleep]');
  process.exit(64);
}
const rate = Number(rateText);
const seconds = Number(secondsText);
const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
const DRAIN_MS = 5000;

interface Connection {
  socket: net.Socket;
  /** Intended send time (ns) of the request in flight, or null when idle. */
  inFlight: bigint | null;
  buffer: Buffer;
}

const latenciesMs: number[] = [];
let errors = 0;
let sent = 0;
const queue: bigint[] = [];
const idle: Connection[] = [];

function dispatch(): void {
  while (queue.length > 0 && idle.length > 0) {
    const conn = idle.pop()!;
    conn.inFlight = queue.shift()!;
    sent++;
    conn.socket.write(request);
  }
}

function open(): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: Number(portText), noDelay: true });
    const conn: Connection = { socket, inFlight: null, buffer: Buffer.alloc(0) };
    socket.once('connect', () => resolve(conn));
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      conn.buffer = conn.buffer.length ? Buffer.concat([conn.buffer, chunk]) : chunk;
      const length = completeResponse(conn.buffer);
      if (length === 0 || conn.inFlight === null) return;
      const ok = conn.buffer.subarray(9, 12).toString() === '200';
      if (ok) latenciesMs.push(Number(process.hrtime.bigint() - conn.inFlight) / 1e6);
      else errors++;
      conn.buffer = conn.buffer.subarray(length);
      conn.inFlight = null;
      idle.push(conn);
      dispatch();
    });
    socket.on('close', () => {
      if (conn.inFlight !== null) errors++;
      conn.inFlight = null;
      const i = idle.indexOf(conn);
      if (i >= 0) idle.splice(i, 1);
    });
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const connections = await Promise.all(Array.from({ length: Number(connectionsText) }, open));
idle.push(...connections);
const intervalNs = BigInt(Math.round(1e9 / rate));
const start = process.hrtime.bigint();
const stop = start + BigInt(Math.round(seconds * 1e9));
let next = start;

// Spinning through setImmediate keeps the schedule to microseconds while still
// letting the event loop deliver responses between ticks, when the load generator
// has its CPU to itself. A timer is late by up to a millisecond: that lateness
// counts in the latency, from the intended send time.
const sleep = mode === 'sleep';
await new Promise<void>((resolve) => {
  const tick = () => {
    const now = process.hrtime.bigint();
    while (next <= now && next < stop) {
      queue.push(next);
      next += intervalNs;
    }
    dispatch();
    if (next >= stop) resolve();
    else if (sleep) setTimeout(tick, Number(next - now) / 1e6);
    else setImmediate(tick);
  };
  tick();
});
const deadline = Date.now() + DRAIN_MS;
while ((queue.length > 0 || connections.some((c) => c.inFlight !== null)) && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 5));
}
const unanswered = queue.length + connections.filter((c) => c.inFlight !== null).length;
for (const c of connections) c.socket.destroy();
const sorted = latenciesMs.sort((a, b) => a - b);
const cpu = process.cpuUsage();
const round = (n: number) => Math.round(n * 1000) / 1000;
console.log(JSON.stringify({
  sent,
  completed: sorted.length,
  errors: errors + unanswered,
  p50_ms: round(percentile(sorted, 50)),
  p90_ms: round(percentile(sorted, 90)),
  p99_ms: round(percentile(sorted, 99)),
  max_ms: round(sorted[sorted.length - 1] ?? NaN),
  cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
}));
