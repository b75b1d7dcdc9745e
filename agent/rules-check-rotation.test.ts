import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RulesCheckRotation } from './rules-check-rotation.ts';

const podsOf = (n: number, key = 'ns') => new Map(Array.from({ length: n }, (_, i) => [`10.0.0.${i + 1}`, `${key}-${i + 1}`]));

function applyAll(rotation: RulesCheckRotation, pods: Map<string, string>, due: Set<string>): void {
  for (const ip of due) rotation.checked(ip, pods.get(ip)!);
}

test('every pod is applied once at first; a change-triggered reconcile then reads none back', () => {
  const rotation = new RulesCheckRotation(10);
  const pods = podsOf(50);
  const first = rotation.due(pods, false);
  assert.equal(first.size, 50);
  applyAll(rotation, pods, first);
  assert.equal(rotation.due(pods, false).size, 0);
});

// Regression: every resync read back every pod's rules (4 commands each), 1.2 s of CPU per node of 50 pods a minute.
test('a resync of 50 checked pods reads back 5 of them, the longest unchecked first, all 50 in 10 resyncs', () => {
  const rotation = new RulesCheckRotation(10);
  const pods = podsOf(50);
  applyAll(rotation, pods, rotation.due(pods, false));
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const due = rotation.due(pods, true);
    assert.equal(due.size, 5);
    for (const ip of due) assert.equal(seen.has(ip), false, `${ip} read back twice before every pod was`);
    for (const ip of due) seen.add(ip);
    applyAll(rotation, pods, due);
  }
  assert.equal(seen.size, 50);
});

test('a pod in a new namespace, or after the node addresses changed, is applied at once; one that failed is due again', () => {
  const rotation = new RulesCheckRotation(10);
  const pods = podsOf(3);
  applyAll(rotation, pods, rotation.due(pods, false));
  pods.set('10.0.0.2', 'ns-recreated');
  rotation.forget('10.0.0.3');
  assert.deepEqual([...rotation.due(pods, false)].sort(), ['10.0.0.2', '10.0.0.3']);
});

test('a pod that left is forgotten: back in its old namespace it is applied again', () => {
  const rotation = new RulesCheckRotation(10);
  const pods = podsOf(2);
  applyAll(rotation, pods, rotation.due(pods, false));
  const without = new Map(pods);
  without.delete('10.0.0.1');
  assert.equal(rotation.due(without, false).size, 0);
  assert.deepEqual([...rotation.due(pods, false)], ['10.0.0.1']);
});
