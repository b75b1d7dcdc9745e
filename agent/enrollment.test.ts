// Capture rules as text: what the reconciler renders, and how it keeps its one
// jump first in PREROUTING. integration/enrollment-netns.test.ts applies them for
// real in a node namespace (root).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaptureReconciler, captureChainRules, planJumpEdits, renderCaptureRules } from './enrollment.ts';
import { enabledTracers, setTracers } from '../core/log.ts';

test('renderCaptureRules declares only our chains and captures per pod IP', () => {
  assert.equal(renderCaptureRules([{ ip: '10.244.1.11' }, { ip: '10.244.1.9' }, { ip: '10.244.1.11' }]), [
    '*nat',
    ':NODEMESH-PREROUTING - [0:0]',
    ':NODEMESH-OUTBOUND - [0:0]',
    ':NODEMESH-INBOUND - [0:0]',
    '-A NODEMESH-PREROUTING -s 10.244.1.9/32 -p tcp -j NODEMESH-OUTBOUND',
    '-A NODEMESH-PREROUTING -s 10.244.1.11/32 -p tcp -j NODEMESH-OUTBOUND',
    '-A NODEMESH-PREROUTING -d 10.244.1.9/32 -p tcp -j NODEMESH-INBOUND',
    '-A NODEMESH-PREROUTING -d 10.244.1.11/32 -p tcp -j NODEMESH-INBOUND',
    '-A NODEMESH-OUTBOUND -p tcp -j REDIRECT --to-ports 15001',
    '-A NODEMESH-INBOUND -p tcp -m tcp --dport 15008 -j REDIRECT --to-ports 15008',
    '-A NODEMESH-INBOUND -p tcp -j REDIRECT --to-ports 15006',
    'COMMIT',
    '',
  ].join('\n'));
});

test('renderCaptureRules rejects an address it cannot capture, naming the pod', () => {
  assert.throws(() => renderCaptureRules([{ ip: 'fd00::1', name: 'shop/cart' }]), (err: Error & { code?: string }) => err.code === 'NM_INVALID_OBJECT' && /pod shop\/cart: ip: "fd00::1"/.test(err.message));
});

test('planJumpEdits keeps exactly one jump, as the first PREROUTING rule', () => {
  const save = (...rules: string[]) => ['*nat', ':PREROUTING ACCEPT [0:0]', ...rules, 'COMMIT'].join('\n');
  const jump = '-A PREROUTING -j NODEMESH-PREROUTING';
  const kube = '-A PREROUTING -j KUBE-SERVICES';
  assert.deepEqual(planJumpEdits(save(jump, kube)), []);
  assert.deepEqual(planJumpEdits(save(kube)), ['-I PREROUTING 1 -j NODEMESH-PREROUTING']);
  assert.deepEqual(planJumpEdits(''), ['-I PREROUTING 1 -j NODEMESH-PREROUTING']);
  assert.deepEqual(planJumpEdits(save(kube, jump)), ['-D PREROUTING -j NODEMESH-PREROUTING', '-I PREROUTING 1 -j NODEMESH-PREROUTING']);
  assert.deepEqual(planJumpEdits(save(jump, kube, jump)), ['-D PREROUTING -j NODEMESH-PREROUTING', '-D PREROUTING -j NODEMESH-PREROUTING', '-I PREROUTING 1 -j NODEMESH-PREROUTING']);
});

test('the enrollment tracer names each rule a reconcile adds and removes; an unchanged reconcile traces nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-enrollment-trace-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Live rules capture 10.1.0.9 only; iptables-save prints them, iptables-restore is recorded and not applied.
  const live = captureChainRules([{ ip: '10.1.0.9' }]);
  writeFileSync(join(dir, 'save'), ['*nat', ':PREROUTING ACCEPT [0:0]', ...[...live.keys()].map((c) => `:${c} - [0:0]`),
    '-A PREROUTING -j NODEMESH-PREROUTING', ...[...live.values()].flat(), 'COMMIT', ''].join('\n'));
  const r = new CaptureReconciler({
    iptablesSave: ['sh', '-c', `cat '${join(dir, 'save')}'`, 'iptables-save'],
    iptablesRestore: ['sh', '-c', `cat >> '${join(dir, 'restored')}'`, 'iptables-restore'],
  });
  const before = enabledTracers();
  t.after(() => setTracers(before));
  setTracers(['enrollment']);
  const lines: string[] = [];
  t.mock.method(process.stderr, 'write', (chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split('\n').filter(Boolean));
    return true;
  });
  const traces = () => lines.map((l) => JSON.parse(l)).filter((l) => l.scope === 'enrollment' && l.level === 'debug');

  await r.reconcile([{ ip: '10.1.0.5' }]);
  assert.equal(traces().length, 1);
  assert.deepEqual(traces()[0].added, ['-A NODEMESH-PREROUTING -s 10.1.0.5/32 -p tcp -j NODEMESH-OUTBOUND', '-A NODEMESH-PREROUTING -d 10.1.0.5/32 -p tcp -j NODEMESH-INBOUND']);
  assert.deepEqual(traces()[0].removed, ['-A NODEMESH-PREROUTING -s 10.1.0.9/32 -p tcp -j NODEMESH-OUTBOUND', '-A NODEMESH-PREROUTING -d 10.1.0.9/32 -p tcp -j NODEMESH-INBOUND']);
  assert.deepEqual(traces()[0].jumpEdits, []);
  assert.ok(existsSync(join(dir, 'restored')));

  await r.reconcile([{ ip: '10.1.0.9' }]);
  assert.equal(traces().length, 1, 'the live rules already capture 10.1.0.9: no restore, no trace');
});
