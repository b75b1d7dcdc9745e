// The load generators against a real local HTTP server: wrk's summary parses into
// the numbers it printed, and the open-loop client holds its rate and reports
// latency from the intended send time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { parseIperf, parseWrk, RATE_CLIENT } from './load-tools.ts';
import type { LatencyResult } from './load-tools.ts';
import { median } from './stats.ts';

const run = promisify(execFile);

async function origin(t: { after(fn: () => Promise<void> | void): void }, delayMs = 0): Promise<number> {
  const server = createServer((_req, res) => {
    setTimeout(() => res.end('x'.repeat(1024)), delayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  t.after(() => void server.closeAllConnections());
  return (server.address() as AddressInfo).port;
}

test('parseWrk reads requests, rate and errors from a real wrk run', async (t) => {
  const port = await origin(t);
  const { stdout } = await run('wrk', ['-t1', '-c4', '-d1s', `http://127.0.0.1:${port}/`]);
  const result = parseWrk(stdout);
  assert.ok(result.requests > 100, stdout);
  assert.ok(Math.abs(result.rps - result.requests) / result.requests < 0.2, `about one second of requests: ${stdout}`);
  assert.equal(result.errors, 0);
  assert.throws(() => parseWrk('unable to connect'), /wrk: no "Requests\/sec"/);
});

test('rate-client sends at the fixed rate and measures from the intended send time', async (t) => {
  const port = await origin(t, 20);
  // 200/s for 1 s over 2 connections, each response 20 ms late: 2 connections carry at
  // most 100/s, so requests queue and latency must grow well past 20 ms (no coordinated omission).
  const { stdout } = await run(process.execPath, [RATE_CLIENT, '127.0.0.1', String(port), '200', '1', '2']);
  const result = JSON.parse(stdout) as LatencyResult;
  assert.equal(result.sent, 200);
  assert.equal(result.completed, 200);
  assert.equal(result.errors, 0);
  assert.ok(result.p50_ms >= 20, stdout);
  assert.ok(result.p99_ms > 200, `queued requests count their wait: ${stdout}`);

  const { stdout: fast } = await run(process.execPath, [RATE_CLIENT, '127.0.0.1', String(await origin(t)), '500', '1', '4']);
  const unloaded = JSON.parse(fast) as LatencyResult;
  assert.equal(unloaded.completed, 500);
  assert.ok(unloaded.p50_ms < 20, fast);
});

test('rate-client with `sleep` keeps the rate on timers, at a fraction of the CPU spinning takes', async (t) => {
  const port = await origin(t);
  const measure = async (args: string[]) => JSON.parse((await run(process.execPath, [RATE_CLIENT, '127.0.0.1', String(port), '200', '1', '2', ...args])).stdout) as LatencyResult;
  const spinning = await measure([]);
  const sleeping = await measure(['sleep']);
  assert.equal(sleeping.sent, 200);
  assert.equal(sleeping.completed, 200);
  assert.ok(sleeping.p50_ms < 20, JSON.stringify(sleeping));
  assert.ok(sleeping.cpu_ms < spinning.cpu_ms / 2, `CPU ms: sleeping ${sleeping.cpu_ms}, spinning ${spinning.cpu_ms}`);
});

test('parseIperf reads the receiver rate and reports iperf3\'s own error', () => {
  assert.equal(parseIperf(JSON.stringify({ end: { sum_received: { bits_per_second: 2.5e9 } } })), 2.5);
  assert.throws(() => parseIperf(JSON.stringify({ error: 'unable to connect to server' })), /iperf3: unable to connect/);
});

test('median ignores missing values', () => {
  assert.equal(median([3, null, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([null]), null);
});
