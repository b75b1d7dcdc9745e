import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { setLevel } from '../core/log.ts';
import { ConnectionTracker } from './connection-tracker.ts';
import type { ConnectionInfo, TapEvent } from './connection-tracker.ts';
import { createMetrics } from './metrics.ts';
import { workload } from './testdata/mesh-fixture.ts';

// Every connection logs its open and close.
setLevel('warn');

const client = workload('frontend', '10.0.0.2', 'n1');

/** A connection whose destroy() reports its close (`closes`) or, like a stuck HTTP/2 stream, never does. */
function open(tracker: ConnectionTracker, closes: boolean): void {
  let finish: () => void = () => {};
  const info: ConnectionInfo = {
    listener: 'outbound', reporter: 'source', sourceIp: client.ip, sourceWorkload: client, sourcePrincipal: null,
    destinationIp: '10.0.0.9', destinationPort: 80, destinationPrincipal: null, security: 'none',
    bytes: () => ({ received: 0, sent: 0 }),
    destroy: () => {
      if (closes) setImmediate(() => finish());
    },
  };
  finish = tracker.open(info).finish;
}

async function closedCount(registry: Registry): Promise<number> {
  return (await registry.getSingleMetric('nodemesh_tcp_connections_closed_total')!.get()).values.reduce((n, v) => n + v.value, 0);
}

test('regression: a connection whose close never comes after the drain deadline no longer holds the daemon: closeAll records it closed after the grace and says so', async () => {
  const registry = new Registry();
  const tracker = new ConnectionTracker(createMetrics(registry));
  const closes: TapEvent[] = [];
  tracker.subscribe((e) => closes.push(e));
  open(tracker, true);
  open(tracker, false);
  assert.equal(await tracker.closeAll('drain deadline reached', 50), 1);
  assert.equal(tracker.size, 0);
  await tracker.idle();
  assert.equal(await closedCount(registry), 2, 'both closes counted once each');
  const reasons = closes.filter((e) => e.event === 'close').map((e) => e.reason);
  assert.deepEqual(reasons.sort(), ['drain deadline reached', 'drain deadline reached; its close did not come within 50 ms']);
});

test('closeAll returns as soon as every connection reports its close, without waiting out the grace', async () => {
  const tracker = new ConnectionTracker(createMetrics(new Registry()));
  for (let i = 0; i < 3; i++) open(tracker, true);
  const started = performance.now();
  assert.equal(await tracker.closeAll('drain deadline reached', 60_000), 0);
  assert.ok(performance.now() - started < 5_000, 'did not wait for the 60 s grace');
  assert.equal(tracker.size, 0);
  assert.equal(await tracker.closeAll('nothing open', 60_000), 0);
});
