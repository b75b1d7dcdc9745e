// Capture rules as text: what the reconciler renders, and how it keeps its one
// jump first in PREROUTING. integration/enrollment-netns.test.ts applies them for
// real in a node namespace (root).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planJumpEdits, renderCaptureRules } from './enrollment.ts';

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
