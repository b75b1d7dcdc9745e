// The rules in-pod capture puts inside a pod's namespace, on real iptables in a
// namespace this test makes: idempotent (a second apply changes nothing, so a
// restarted agent adopts what it finds), repaired when a jump is lost, and
// removed to the last chain and route. Needs root; fails (never skips) without it.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { InPodCapture } from '../agent/in-pod-capture.ts';

const NETNS = `nmipc${process.pid}`;
const PATH = `/var/run/netns/${NETNS}`;
const NODE_ADDRESSES = ['172.30.0.11', '10.244.1.1'];
const inNs = (...argv: string[]) => execFileSync('ip', ['netns', 'exec', NETNS, ...argv], { encoding: 'utf8' });

before(() => {
  execFileSync('ip', ['netns', 'add', NETNS]);
  inNs('ip', 'link', 'set', 'lo', 'up');
});
after(() => execFileSync('ip', ['netns', 'del', NETNS]));

test('in-pod rules: a second apply changes nothing; a lost jump is put back first in its chain', async () => {
  const capture = new InPodCapture();
  assert.equal(await capture.apply(PATH, NODE_ADDRESSES), true, 'the first apply installs the rules');
  assert.equal(await capture.apply(PATH, NODE_ADDRESSES), false, 'iptables-save prints what we wrote, so nothing is re-applied');
  const nat = inNs('iptables-save', '-t', 'nat');
  assert.match(nat, /-A OUTPUT -j NODEMESH-OUTPUT/);
  assert.match(nat, /-A NODEMESH-OUTPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15001/);
  assert.match(nat, /-A NODEMESH-PREROUTING -s 172\.30\.0\.11\/32 -j RETURN/);
  assert.match(inNs('ip', 'rule', 'show'), /fwmark 0x539\/0xfff lookup 133/);
  assert.match(inNs('ip', 'route', 'show', 'table', '133'), /local default dev lo/);

  // Something else inserts its own rule above ours, or deletes our jump.
  inNs('iptables', '-t', 'nat', '-D', 'OUTPUT', '-j', 'NODEMESH-OUTPUT');
  inNs('iptables', '-t', 'nat', '-I', 'PREROUTING', '1', '-p', 'udp', '-j', 'RETURN');
  assert.equal(await capture.apply(PATH, NODE_ADDRESSES), true, 'the drift is repaired');
  const repaired = inNs('iptables-save', '-t', 'nat').split('\n');
  assert.equal(repaired.filter((l) => l.startsWith('-A PREROUTING'))[0], '-A PREROUTING -j NODEMESH-PREROUTING');
  assert.equal(repaired.filter((l) => l === '-A OUTPUT -j NODEMESH-OUTPUT').length, 1);
});

test('in-pod rules: remove leaves no NODEMESH chain, jump or reply route, and a second remove finds nothing', async () => {
  const capture = new InPodCapture();
  inNs('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-p', 'udp', '-j', 'RETURN');
  await capture.apply(PATH, NODE_ADDRESSES);
  assert.equal(await capture.remove(PATH), true);
  assert.doesNotMatch(inNs('iptables-save'), /NODEMESH/);
  assert.doesNotMatch(inNs('ip', 'rule', 'show'), /lookup 133/);
  assert.equal(inNs('ip', 'route', 'show', 'table', 'all').includes('table 133'), false);
  assert.equal(await capture.remove(PATH), false);
  // What is not ours stays.
  assert.match(inNs('iptables-save', '-t', 'nat'), /-A POSTROUTING -p udp -j RETURN/);
});
