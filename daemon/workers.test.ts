// The data plane on several threads (workers.ts), in one process on loopback:
// a worker that dies is started again and binds its listeners again, and the
// node's answers leave it out meanwhile instead of failing or hanging.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { ConfigStore } from './config-store.ts';
import { callTimeoutMs, startDataPlane } from './workers.ts';
import { MemoryCertSource, applyConfig, workload } from './testdata/mesh-fixture.ts';

/** Lines the process (and its worker threads, whose stderr the main thread forwards) writes to stderr. */
function captureStderr(t: { after(fn: () => void): void }): () => Record<string, unknown>[] {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(...String(chunk).split('\n').filter(Boolean));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  t.after(() => (process.stderr.write = write));
  return () => lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a worker that dies is started again and binds its listeners again; meanwhile the node answers without it', async (t) => {
  const logs = captureStderr(t);
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-workers-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  process.env.NODEMESH_TEST_CRASH_MARKER = join(dir, 'crashed');
  t.after(() => delete process.env.NODEMESH_TEST_CRASH_MARKER);
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [workload('a', '127.0.0.2', 'n1')] });
  const plane = await startDataPlane({
    config, certs: new MemoryCertSource(''), registry: new Registry(), bindHost: '127.0.0.1', ports: { outbound: 0, inboundPlaintext: 0, inbound: 0 },
    workers: 2, workerEntry: new URL('./testdata/crashing-worker.ts', import.meta.url),
  });
  t.after(() => plane.stop());
  const listening = () => logs().filter((l) => l.msg === 'data plane listening' && l.worker === 1);
  assert.equal(listening().length, 1, 'worker 1 bound its listeners at start');

  await until('worker 1 to die', () => logs().some((l) => l.msg === 'data-plane worker exited: starting it again' && l.worker === 1));
  // Gone: the node answers at once, without it.
  assert.deepEqual(await plane.connections(), []);
  assert.match(await plane.metrics(), /nodemesh_/, '/metrics still answers with the rest of the node');

  await until('worker 1 to listen again', () => listening().length === 2);
  assert.deepEqual(await plane.connections(), []);
  assert.equal(logs().filter((l) => l.msg === 'data-plane worker exited: starting it again').length, 1, 'it died once and lives on');
});

test('regression: a worker\'s drain is waited for up to its deadline, not the usual 10 s answer time (a worker holding a connection to a 20 s deadline failed the drain); a stop only briefly before terminate()', () => {
  assert.equal(callTimeoutMs('drainConnections', [20_000]), 30_000);
  assert.ok(callTimeoutMs('drainConnections', [3_000]) > 3_000 + 1_000, 'the deadline and the closes\' grace');
  assert.ok(callTimeoutMs('stop', []) < callTimeoutMs('connections', []));
  assert.equal(callTimeoutMs('connections', []), 10_000);
});
