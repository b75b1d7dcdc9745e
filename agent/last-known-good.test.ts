import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Resource, Workload } from '../core/types.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import { LastKnownGood, readLastKnownGood } from './last-known-good.ts';

function workload(name: string, ip: string, node = 'node-1', labels: Record<string, string> = { app: name }): Resource {
  const w: Workload = { uid: `uid-${name}`, namespace: 'shop', name, workloadName: name, serviceAccount: name, node, ip, labels, enrolled: true, mtlsMode: 'permissive', namedPorts: {} };
  return { kind: 'workload', key: w.uid, version: 1, workload: w };
}

test('last-known-good: the config survives a restart; bursts of updates cost one write', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'state', 'config.jsonl');
  const store = new ConfigStore('node-1');
  const lkg = new LastKnownGood(store, path, 50);
  for (let v = 1; v <= 20; v++) {
    store.apply({ epoch: 'e', version: v, snapshot: v === 1, removals: [], upserts: [workload(`w${v}`, `10.0.1.${v}`)] });
    lkg.schedule();
  }
  assert.equal(existsSync(path), false, 'nothing is written synchronously');
  await lkg.flush();
  const restarted = new ConfigStore('node-1');
  restarted.restore(readLastKnownGood(path)!);
  assert.equal(restarted.version, 20);
  assert.equal(restarted.workloads().length, 20);
  assert.equal(restarted.workloadByIp('10.0.1.7')?.name, 'w7');
  assert.equal(restarted.synced, true);
  assert.equal(readLastKnownGood(join(dir, 'missing.jsonl')), undefined);
});

test('last-known-good: a damaged file counts as none (a partial mesh could lack a deny)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.jsonl');
  const store = new ConfigStore('node-1');
  store.apply({ epoch: 'e', version: 3, snapshot: true, removals: [], upserts: [1, 2, 3].map((i) => workload(`w${i}`, `10.0.1.${i}`)) });
  const lkg = new LastKnownGood(store, path, 0);
  lkg.schedule();
  await lkg.flush();
  const whole = readFileSync(path, 'utf8').split('\n');
  assert.equal(whole.length, 5, 'a header, three resources, and the final newline');
  assert.equal(readLastKnownGood(path)?.resources.length, 3);

  writeFileSync(path, whole.slice(0, 3).join('\n') + '\n');
  assert.equal(readLastKnownGood(path), undefined, 'a truncated file');
  writeFileSync(path, [whole[0], whole[1], '{"kind":', whole[3]].join('\n') + '\n');
  assert.equal(readLastKnownGood(path), undefined, 'a broken line');
  writeFileSync(path, '{"epoch":');
  assert.equal(readLastKnownGood(path), undefined, 'a broken header');
});
