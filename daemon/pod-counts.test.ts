// The per pod counts shared by the data-plane workers: a pod's limits hold for
// the node whichever worker accepted each connection, a dead worker's counts go
// with it, and a departed pod's slot is given back only once nothing of it is
// counted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Registry } from 'prom-client';
import { logger } from '../core/log.ts';
import { createMetrics } from './metrics.ts';
import { CONNECTIONS, MAX_POD_SLOTS, PodSlotAllocator, REQUESTS, SharedPodCounts } from './pod-counts.ts';
import { SourceLimits } from './source-limits.ts';
import { workload } from './testdata/mesh-fixture.ts';

const NOISY = workload('noisy', '127.0.0.2', 'n1', { maxConnections: 3, maxConcurrentRequests: 2 });

/** Two workers' limits over one shared table, as workers.ts builds them. */
function twoWorkers() {
  const main = new SharedPodCounts(SharedPodCounts.allocate(2), 2, 0);
  const allocator = new PodSlotAllocator(main);
  const other = new SharedPodCounts(main.buffer, 2, 1);
  other.apply(allocator.update([NOISY.uid]));
  const limits = [main, other].map((shared) => new SourceLimits(createMetrics(new Registry()), logger('outbound'), { workers: 2, shared }));
  return { main, other, allocator, limits };
}

/** A real socket that is not connected: destroying it emits 'close', which is what the limits count on. */
const socket = () => new net.Socket();

test('a pod\'s connection limit is the node\'s: connections admitted by either worker count against it, and a close frees a place in both', () => {
  const { limits: [w0, w1] } = twoWorkers();
  const held = [socket(), socket(), socket()];
  assert.equal(w0!.admitConnection(NOISY, 'spiffe://noisy', held[0]!), true);
  assert.equal(w1!.admitConnection(NOISY, 'spiffe://noisy', held[1]!), true);
  assert.equal(w0!.admitConnection(NOISY, 'spiffe://noisy', held[2]!), true);
  // Split per worker (ceil(3/2) = 2 each), worker 1 would still admit: node-wide it is at 3.
  assert.equal(w1!.admitConnection(NOISY, 'spiffe://noisy', socket()), false);
  assert.equal(w0!.admitConnection(NOISY, 'spiffe://noisy', socket()), false);
  held[0]!.destroy();
  return new Promise<void>((resolve) => held[0]!.once('close', () => {
    assert.equal(w1!.admitConnection(NOISY, 'spiffe://noisy', socket()), true, 'a place freed in worker 0 is free in worker 1');
    resolve();
  }));
});

test('a pod\'s request limit is the node\'s, and a released request frees its place', () => {
  const { limits: [w0, w1] } = twoWorkers();
  const first = w0!.startRequest(NOISY, 'spiffe://noisy');
  const second = w1!.startRequest(NOISY, 'spiffe://noisy');
  assert.equal(typeof first, 'function');
  assert.equal(typeof second, 'function');
  const refused = w0!.startRequest(NOISY, 'spiffe://noisy');
  assert.equal(typeof refused, 'string');
  assert.match(refused as string, /has 2 HTTP requests in flight \(limit 2, over 2 workers\)/);
  (second as () => void)();
  assert.equal(typeof w0!.startRequest(NOISY, 'spiffe://noisy'), 'function');
});

test('a worker that died has its counts cleared: its connections died with it', () => {
  const { main, limits: [, w1] } = twoWorkers();
  for (let i = 0; i < 3; i++) assert.equal(w1!.admitConnection(NOISY, 'spiffe://noisy', socket()), true);
  const slot = main.slotOf(NOISY.uid)!;
  assert.equal(main.total(slot, CONNECTIONS), 3);
  main.clearWorker(1);
  assert.equal(main.total(slot, CONNECTIONS), 0);
});

test('a departed pod keeps its slot while anything of it is counted, then the slot goes to a new pod', () => {
  const main = new SharedPodCounts(SharedPodCounts.allocate(2), 2, 0);
  const allocator = new PodSlotAllocator(main);
  allocator.update(['a']);
  const slot = main.slotOf('a')!;
  main.add(slot, REQUESTS, 1);
  assert.deepEqual(allocator.update([]), { assigned: [], freed: [] }, 'a request of pod a is still counted');
  assert.equal(main.slotOf('a'), slot);
  main.add(slot, REQUESTS, -1);
  assert.deepEqual(allocator.update(['b']), { assigned: [['b', slot]], freed: ['a'] });
});

test('more local pods than slots: the pods past the table are counted by each worker alone, against its share', () => {
  const main = new SharedPodCounts(SharedPodCounts.allocate(2), 2, 0);
  const allocator = new PodSlotAllocator(main);
  const uids = Array.from({ length: MAX_POD_SLOTS + 1 }, (_, i) => `pod-${i}`);
  assert.equal(allocator.update(uids).assigned.length, MAX_POD_SLOTS);
  const late = workload('late', '127.0.0.3', 'n1', { maxConnections: 3 });
  const limits = new SourceLimits(createMetrics(new Registry()), logger('outbound'), { workers: 2, shared: main });
  assert.equal(main.slotOf(late.uid), undefined);
  assert.equal(limits.admitConnection(late, 'spiffe://late', socket()), true);
  assert.equal(limits.admitConnection(late, 'spiffe://late', socket()), true);
  assert.equal(limits.admitConnection(late, 'spiffe://late', socket()), false, 'ceil(3/2) = 2 in this worker');
});
