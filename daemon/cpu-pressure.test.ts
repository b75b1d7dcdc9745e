import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuPressure } from './cpu-pressure.ts';

const psi = (someTotal: number) => `some avg10=0.00 avg60=0.00 avg300=0.00 total=${someTotal}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n`;

function psiFile(t: TestContext, someTotal: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-psi-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cpu.pressure');
  writeFileSync(file, psi(someTotal));
  return file;
}

/** A reader of a PSI file whose some total starts at `someTotal`; `update` rewrites the total. */
function openedPsi(t: TestContext, someTotal: number): { pressure: CpuPressure; update: (total: number) => void } {
  const file = psiFile(t, someTotal);
  const pressure = CpuPressure.open([file])!;
  t.after(() => pressure.close());
  return { pressure, update: (total) => writeFileSync(file, psi(total)) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('the share of the time since the previous sample that some task waited for a CPU, from the some line\'s total (µs)', async (t) => {
  const { pressure, update } = openedPsi(t, 1_000_000);
  await sleep(100);
  // 40 ms of waiting in at least 100 ms: at most 0.4, and read again from the same descriptor.
  update(1_040_000);
  const share = pressure.sample();
  assert.ok(share > 0 && share <= 0.4, `share ${share}`);
  // Nothing more waited: 0 over the next interval, not the average since opening.
  await sleep(20);
  assert.equal(pressure.sample(), 0);
});

test('a total that runs backwards or faster than the clock reads as 0 or 1, never outside', async (t) => {
  const { pressure, update } = openedPsi(t, 5_000_000);
  await sleep(10);
  update(1);
  assert.equal(pressure.sample(), 0);
  await sleep(10);
  update(1 + 60_000_000);
  assert.equal(pressure.sample(), 1);
});

test('the first path that reads as PSI is used: a missing file and one without a some line are passed over; none, no reader', (t) => {
  const good = psiFile(t, 7);
  const notPsi = psiFile(t, 0);
  writeFileSync(notPsi, 'full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n');
  const pressure = CpuPressure.open([undefined, join(tmpdir(), 'nodemesh-no-such-dir', 'cpu.pressure'), notPsi, good]);
  assert.ok(pressure);
  pressure.close();
  assert.equal(CpuPressure.open([notPsi]), undefined);
});

test('this machine\'s kernel reports CPU pressure (the cgroup\'s or the machine\'s) and a sample is a share', async (t) => {
  const pressure = CpuPressure.open();
  assert.ok(pressure, 'no /proc/pressure/cpu: the fair share runs on event-loop lag alone on such a kernel');
  t.after(() => pressure.close());
  const until = performance.now() + 30;
  while (performance.now() < until);
  const share = pressure.sample();
  assert.ok(share >= 0 && share <= 1, `share ${share}`);
});
