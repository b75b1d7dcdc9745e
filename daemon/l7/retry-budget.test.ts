import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RetryBudget } from './retry-budget.ts';

test('retries are limited to 20% of requests plus 10/s over the window, and recover as it slides', () => {
  let now = 0;
  const budget = new RetryBudget({ ratio: 0.2, minPerSecond: 10, windowMs: 10_000 }, () => now);
  for (let i = 0; i < 1000; i++) budget.request();
  let granted = 0;
  while (budget.tryRetry()) granted++;
  assert.equal(granted, 200 + 100);
  now += 10_001;
  assert.ok(budget.tryRetry(), 'the window slid: the floor allows retries again');
  let more = 1;
  while (budget.tryRetry()) more++;
  assert.equal(more, 100, 'without recent requests only the per-second floor remains');
});
