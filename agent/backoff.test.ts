import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from './backoff.ts';

test('backoff: doubles from the initial delay, jittered, capped, and resets', () => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 10_000 });
  const ceilings = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000];
  for (const ceiling of ceilings) {
    const delay = backoff.next();
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `delay ${delay} outside [${ceiling / 2}, ${ceiling}]`);
  }
  backoff.reset();
  assert.ok(backoff.next() <= 100);
});
