import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Endpoint } from '../../core/types.ts';
import { PeakEwmaBalancer } from './peak-ewma.ts';

const ep = (ip: string, ready = true): Endpoint => ({ workloadUid: ip, ip, ready });

test('peak-EWMA prefers the faster endpoint and the one with fewer outstanding requests', () => {
  let now = 0;
  const lb = new PeakEwmaBalancer(Math.random, () => now);
  const slow = lb.start('slow');
  const fast = lb.start('fast');
  now = 5;
  fast();
  now = 200;
  slow();
  assert.ok(lb.cost('slow') > lb.cost('fast') * 10, `${lb.cost('slow')} vs ${lb.cost('fast')}`);
  const picks = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const e = lb.choose([ep('slow'), ep('fast')])!;
    picks.set(e.ip, (picks.get(e.ip) ?? 0) + 1);
  }
  assert.equal(picks.get('fast'), 200, 'with two endpoints both are compared every time');

  const before = lb.cost('fast');
  const outstanding = [lb.start('fast'), lb.start('fast')];
  assert.ok(lb.cost('fast') >= before * 3 - 1e-9, 'outstanding requests multiply the cost');
  outstanding.forEach((done) => done());
});

test('a latency peak counts at once; recovery decays it; idle endpoints drift back to cheap', () => {
  let now = 0;
  const lb = new PeakEwmaBalancer(Math.random, () => now);
  const measure = (ms: number) => {
    const done = lb.start('a');
    now += ms;
    done();
  };
  measure(10);
  measure(500);
  assert.ok(Math.abs(lb.cost('a') - 500) < 1, 'the peak replaces the average');
  measure(10);
  assert.ok(lb.cost('a') > 400, 'one fast answer right after does not erase the peak');
  now += 30_000;
  assert.ok(lb.cost('a') < 50, 'idle time decays the estimate');
});

test('only ready endpoints are chosen', () => {
  const lb = new PeakEwmaBalancer();
  assert.equal(lb.choose([ep('a', false), ep('b')])!.ip, 'b');
  assert.equal(lb.choose([ep('a', false)]), undefined);
  assert.equal(lb.choose([]), undefined);
});
