// Capture rules applied for real in a test cluster's node namespace (never the
// machine's own): the agent's reconciler against iptables, kube-proxy's rules and
// pods in their own namespaces. Needs root; fails when it cannot set up. The
// rendered rules are unit-tested beside the code, in agent/enrollment.test.ts.

import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaptureReconciler, enrollmentFromConfig, uninstallCapture } from '../agent/enrollment.ts';
import { ConfigStore } from '../daemon/config-store.ts';
import type { Resource, Workload } from '../core/types.ts';
import { createCluster, type Cluster } from './cluster/cluster.ts';
import { runPrefix } from './cluster/netns.ts';
import { openConnection, startServer, tcpRequest } from './cluster/servers.ts';

async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('capture in a node namespace', () => {
  let cluster: Cluster;
  let netns: string;
  let restoreLog: string;
  let workDir: string;

  before(async () => {
    workDir = mkdtempSync(join(tmpdir(), 'nodemesh-enrollment-'));
    restoreLog = join(workDir, 'restores');
    cluster = await createCluster({
      nodes: 1,
      pods: [{ name: 'a', node: 'n1' }, { name: 'b', node: 'n1' }, { name: 'c', node: 'n1' }],
      services: [{ name: 'b', selector: { app: 'b' }, ports: [{ port: 80, targetPort: 7000 }] }],
    }, { prefix: runPrefix('nmc', 'e') });
    netns = cluster.node('n1').netns;
    await startServer(cluster, 'b', 'echo', 7000);
    // What the daemon would be: listeners on the capture ports of the node namespace that say who answered.
    await startServer(cluster, { netns }, 'greeter', 15001, 'outbound-capture');
    await startServer(cluster, { netns }, 'greeter', 15006, 'inbound-plaintext');
    await startServer(cluster, { netns }, 'greeter', 15008, 'hbone');
  });

  after(async () => {
    await cluster?.teardown();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  const ip = (pod: string) => cluster.pod(pod).ip;
  const podNs = (pod: string) => cluster.pod(pod).netns;

  /** A reconciler whose iptables-restore runs in the node namespace and counts its runs. */
  function reconciler(t: TestContext): CaptureReconciler {
    t.after(() => uninstallCapture(commands()));
    return new CaptureReconciler(commands());
  }

  function commands() {
    return {
      iptablesRestore: ['sh', '-c', `echo run >> '${restoreLog}'; exec ip netns exec '${netns}' iptables-restore "$@"`, 'iptables-restore'],
      iptablesSave: ['ip', 'netns', 'exec', netns, 'iptables-save'],
    };
  }

  function restoreRuns(): number {
    return existsSync(restoreLog) ? readFileSync(restoreLog, 'utf8').split('\n').filter(Boolean).length : 0;
  }

  /** How many of our rules match a pod's address (2 when it is captured both ways). */
  function capturing(rules: string[], pod: string): number {
    return rules.filter((l) => l.startsWith('-A NODEMESH-') && l.includes(` ${ip(pod)}/32 `)).length;
  }

  async function nat(): Promise<string[]> {
    return (await cluster.exec(netns, ['iptables-save', '-t', 'nat'])).stdout.split('\n').filter((l) => l.startsWith('-A '));
  }

  test('reconcile installs the jump first in PREROUTING, follows pod changes with one restore each, and skips when unchanged', async (t) => {
    const r = reconciler(t);
    const runs = restoreRuns();
    await r.reconcile([{ ip: ip('a') }]);
    let rules = await nat();
    const prerouting = rules.filter((l) => l.startsWith('-A PREROUTING '));
    assert.deepEqual(prerouting, ['-A PREROUTING -j NODEMESH-PREROUTING', '-A PREROUTING -j KUBE-SERVICES']);
    assert.ok(rules.includes(`-A NODEMESH-PREROUTING -s ${ip('a')}/32 -p tcp -j NODEMESH-OUTBOUND`));
    assert.equal(restoreRuns(), runs + 1);

    await r.reconcile([{ ip: ip('a') }]);
    assert.equal(restoreRuns(), runs + 1, 'an unchanged reconcile runs no iptables-restore');

    await r.reconcile([{ ip: ip('c') }, { ip: ip('a') }]);
    rules = await nat();
    assert.equal(capturing(rules, 'c'), 2);
    assert.equal(restoreRuns(), runs + 2);

    await r.reconcile([{ ip: ip('c') }, { ip: 'not-an-ip', name: 'default/broken' }]);
    rules = await nat();
    assert.equal(capturing(rules, 'a'), 0, 'a pod that left is no longer captured');
    assert.equal(capturing(rules, 'c'), 2, 'one bad pod does not stop the others');
    assert.equal(rules.filter((l) => l.startsWith('-A PREROUTING -j NODEMESH-PREROUTING')).length, 1);
  });

  test('a jump inserted above ours (kube-proxy restarting) is repaired: ours moves back to the top, exactly once', async (t) => {
    const r = reconciler(t);
    await r.reconcile([{ ip: ip('a') }]);
    await cluster.exec(netns, ['iptables', '-w', '-t', 'nat', '-D', 'PREROUTING', '-j', 'KUBE-SERVICES']);
    await cluster.exec(netns, ['iptables', '-w', '-t', 'nat', '-I', 'PREROUTING', '1', '-j', 'KUBE-SERVICES']);
    await cluster.exec(netns, ['iptables', '-w', '-t', 'nat', '-A', 'PREROUTING', '-j', 'NODEMESH-PREROUTING']);
    await r.reconcile([{ ip: ip('a') }]);
    assert.deepEqual((await nat()).filter((l) => l.startsWith('-A PREROUTING ')), ['-A PREROUTING -j NODEMESH-PREROUTING', '-A PREROUTING -j KUBE-SERVICES']);
  });

  test('a chain flushed behind our back is restored', async (t) => {
    const r = reconciler(t);
    await r.reconcile([{ ip: ip('a') }]);
    await cluster.exec(netns, ['iptables', '-w', '-t', 'nat', '-F', 'NODEMESH-OUTBOUND']);
    await r.reconcile([{ ip: ip('a') }]);
    assert.ok((await nat()).includes('-A NODEMESH-OUTBOUND -p tcp -j REDIRECT --to-ports 15001'));
  });

  test('uninstall leaves no NODEMESH line and keeps kube-proxy rules; a second uninstall is a no-op', async (t) => {
    const r = reconciler(t);
    await r.reconcile([{ ip: ip('a') }, { ip: ip('b') }]);
    await cluster.exec(netns, ['iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-d', '10.1.2.3/32', '-j', 'NODEMESH-OUTBOUND']);
    await r.uninstall();
    const save = (await cluster.exec(netns, ['iptables-save'])).stdout;
    assert.doesNotMatch(save, /NODEMESH/);
    assert.match(save, /-A PREROUTING -j KUBE-SERVICES/);
    const runs = restoreRuns();
    await uninstallCapture(commands());
    assert.equal(restoreRuns(), runs);
  });

  test('REDIRECT: outbound from an enrolled pod lands on 15001, inbound to it on 15006 or 15008, others flow directly', async (t) => {
    const r = reconciler(t);
    assert.equal(await tcpRequest(cluster, podNs('a'), ip('b'), 7000, 'direct'), 'direct');
    await r.reconcile([{ ip: ip('a') }]);
    // a is enrolled: its connections, to a pod or to a VIP, go to the node's outbound listener.
    assert.equal(await tcpRequest(cluster, podNs('a'), ip('b'), 7000), 'hello from outbound-capture\n');
    assert.equal(await tcpRequest(cluster, podNs('a'), cluster.service('b').clusterIP, 80), 'hello from outbound-capture\n');
    // c is not enrolled and neither is b: untouched, including through the VIP.
    assert.equal(await tcpRequest(cluster, podNs('c'), ip('b'), 7000, 'plain'), 'plain');
    assert.equal(await tcpRequest(cluster, podNs('c'), cluster.service('b').clusterIP, 80, 'via vip'), 'via vip');

    await r.reconcile([{ ip: ip('a') }, { ip: ip('b') }]);
    // b is enrolled: connections to it from a non-mesh pod go to the inbound listeners.
    assert.equal(await tcpRequest(cluster, podNs('c'), ip('b'), 7000), 'hello from inbound-plaintext\n');
    assert.equal(await tcpRequest(cluster, podNs('c'), ip('b'), 15008), 'hello from hbone\n');
    // Connections the node itself originates (the daemon, kubelet) pass OUTPUT and are not captured.
    assert.equal(await tcpRequest(cluster, netns, ip('b'), 7000, 'from node'), 'from node');
  });

  test('regression: a non-mesh pod reaching an enrolled pod on its node through the VIP is captured (no bypass of inbound capture)', async (t) => {
    const r = reconciler(t);
    const vip = cluster.service('b').clusterIP;
    // b enrolled, but its VIP not captured: kube-proxy's DNAT delivers straight to b.
    await r.reconcile([{ ip: ip('b') }]);
    assert.equal(await tcpRequest(cluster, podNs('c'), vip, 80, 'bypass'), 'bypass');
    // With the VIP port captured, the same connection reaches the inbound plaintext listener.
    await r.reconcile([{ ip: ip('b') }, { ip: ip('a') }], [{ ip: vip, port: 80 }]);
    assert.equal(await tcpRequest(cluster, podNs('c'), vip, 80), 'hello from inbound-plaintext\n');
    // An enrolled source still goes outbound first.
    assert.equal(await tcpRequest(cluster, podNs('a'), vip, 80), 'hello from outbound-capture\n');
    assert.ok((await nat()).includes(`-A NODEMESH-PREROUTING -d ${vip}/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15006`));
  });

  test('enrolling does not disturb an open connection; only new ones are captured', async (t) => {
    const r = reconciler(t);
    const conn = await openConnection(cluster, podNs('a'), ip('b'), 7000);
    t.after(() => conn.close());
    await conn.roundTrip('before enrollment');
    await r.reconcile([{ ip: ip('a') }, { ip: ip('b') }]);
    await conn.roundTrip('after enrollment');
    assert.doesNotMatch(conn.process.stdout, /hello from/);
    assert.equal(await tcpRequest(cluster, podNs('a'), ip('b'), 7000), 'hello from outbound-capture\n');
  });

  function workload(pod: string, enrolled = true): Resource {
    const p = cluster.pod(pod);
    const w: Workload = {
      uid: p.uid, namespace: p.namespace, name: p.name, workloadName: p.name, serviceAccount: p.serviceAccount,
      node: p.node, ip: p.ip, labels: p.labels, enrolled, mtlsMode: 'permissive', namedPorts: {},
    };
    return { kind: 'workload', key: p.uid, version: 1, workload: w };
  }

  test('enrollmentFromConfig follows the store: enrolled local workloads only, bursts coalesced, non-workload changes ignored', async (t) => {
    const store = new ConfigStore('n1');
    const loop = enrollmentFromConfig(store, reconciler(t));
    t.after(() => loop.stop());
    const runs = restoreRuns();
    store.apply({ epoch: 'e', version: 1, snapshot: true, upserts: [workload('a'), workload('c', false)], removals: [] });
    for (let v = 2; v < 12; v++) store.apply({ epoch: 'e', version: v, snapshot: false, upserts: [workload(v % 2 ? 'b' : 'a')], removals: [] });
    await loop.settled();
    assert.equal(loop.lastError, undefined);
    let rules = await nat();
    assert.equal(capturing(rules, 'a'), 2);
    assert.equal(capturing(rules, 'b'), 2);
    assert.equal(capturing(rules, 'c'), 0, 'a workload that is not enrolled is not captured');
    assert.ok(restoreRuns() - runs <= 2, `11 updates in a burst cost ${restoreRuns() - runs} restores`);

    const before = restoreRuns();
    store.apply({ epoch: 'e', version: 12, snapshot: false, upserts: [{ kind: 'settings', key: 'mesh', version: 12, settings: { trustDomain: 'cluster.local', rootNamespace: 'nodemesh-system' } }], removals: [] });
    await loop.settled();
    assert.equal(restoreRuns(), before);

    store.apply({ epoch: 'e', version: 13, snapshot: false, upserts: [], removals: [{ kind: 'workload', key: cluster.pod('a').uid }] });
    await loop.settled();
    rules = await nat();
    assert.equal(capturing(rules, 'a'), 0);
    assert.equal(capturing(rules, 'b'), 2);
  });

  test('a failing iptables-restore is reported with its stderr and what to check, and retried until it works', async (t) => {
    // While this file exists, iptables-restore runs without CAP_NET_ADMIN, as in an agent deployed without privileges.
    const denied = join(workDir, 'denied');
    writeFileSync(denied, '');
    const flaky = ['sh', '-c', `if [ -e '${denied}' ]; then exec ip netns exec '${netns}' setpriv --reuid=65534 --regid=65534 --clear-groups iptables-restore "$@"; fi; exec ip netns exec '${netns}' iptables-restore "$@"`, 'iptables-restore'];
    const r = new CaptureReconciler({ iptablesRestore: flaky, iptablesSave: commands().iptablesSave });
    t.after(() => uninstallCapture(commands()));
    await assert.rejects(r.reconcile([{ ip: ip('a') }]), (err: Error & { code?: string }) =>
      err.code === 'NM_IPTABLES' && /--noflush -w: exited with status \d+: .*Permission denied/.test(err.message) && /CAP_NET_ADMIN/.test(err.message) && /xtables\.lock/.test(err.message));

    const store = new ConfigStore('n1');
    const loop = enrollmentFromConfig(store, r, { retryDelayMs: 20 });
    t.after(() => loop.stop());
    store.apply({ epoch: 'e', version: 1, snapshot: true, upserts: [workload('a')], removals: [] });
    await eventually('the reconcile to fail', () => loop.lastError?.constructor.name === 'IptablesError');
    rmSync(denied);
    await eventually('a retry to succeed', async () => loop.lastError === undefined && capturing(await nat(), 'a') === 2);
  });
});
