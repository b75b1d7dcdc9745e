// The operator commands against running nodes: a real control plane and two
// `nodemesh node --no-dataplane` processes (config and certificates, no
// listeners, so no root). What needs a data plane (connections, explain, tap)
// is tested against a meshed cluster in integration/cli.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { tapLine } from './inspect.ts';
import { safe, table } from './output.ts';

const CLI = fileURLToPath(new URL('./nodemesh.ts', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function startProcess(t: import('node:test').TestContext, args: string[], ready: string): Promise<{ child: ChildProcess; line: Record<string, unknown> }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      const line = stderr.split('\n').find((l) => l.includes(`"msg":"${ready}"`));
      if (line) resolve({ child, line: JSON.parse(line) as Record<string, unknown> });
    });
    child.on('close', (code) => reject(new Error(`${args[0]} exited (${code}) before "${ready}": ${stderr}`)));
  });
}

const POLICY = `apiVersion: security.nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: only-web, namespace: shop }
spec:
  selector: { matchLabels: { app: api } }
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/web"] } }] }]
`;
const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: web, port: 80 }]
  rules: [{ backendRefs: [{ name: web, port: 80, weight: 100 }] }]
`;

/** A control plane and two agents; resolves with their admin addresses once both are ready. */
async function startNodes(t: import('node:test').TestContext): Promise<{ n1: string; n2: string; stop1: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-inspect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(new URL('../testdata/two-nodes/', import.meta.url), join(dir, 'config'), { recursive: true });
  writeFileSync(join(dir, 'config', 'policy.yaml'), POLICY);
  writeFileSync(join(dir, 'config', 'route.yaml'), ROUTE);
  writeFileSync(join(dir, 'node-tokens'), 'node-1: node-1-token-0123456789\nnode-2: node-2-token-0123456789\n');
  const cp = await startProcess(t, [
    'controlplane', '--source', join(dir, 'config'), '--listen', '127.0.0.1:0', '--ca-dir', join(dir, 'ca'), '--node-tokens', join(dir, 'node-tokens'),
  ], 'control plane running');
  const node = async (name: string) => {
    writeFileSync(join(dir, `${name}.token`), `${name}-token-0123456789\n`);
    const n = await startProcess(t, [
      'node', '--node-name', name, '--controlplane', String(cp.line.address), '--token-file', join(dir, `${name}.token`),
      '--ca-file', join(dir, 'ca', 'ca-cert.pem'), '--state-dir', join(dir, `${name}-state`), '--no-dataplane',
      '--admin-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--health-addr', '127.0.0.1:0',
    ], 'node agent started');
    const deadline = Date.now() + 15_000;
    while ((await fetch(`http://${String(n.line.health)}/healthz/ready`)).status !== 200) {
      if (Date.now() > deadline) assert.fail(`${name} never became ready`);
      await sleep(50);
    }
    return n;
  };
  const [a, b] = await Promise.all([node('node-1'), node('node-2')]);
  return {
    n1: String(a.line.admin), n2: String(b.line.admin),
    stop1: () => new Promise((resolve) => {
      a.child.once('close', () => resolve());
      a.child.kill('SIGTERM');
    }),
  };
}

test('cli operator commands against two running nodes: tables, -o json|yaml, filters and exit codes', async (t) => {
  const { n1, n2, stop1 } = await startNodes(t);
  const both = `${n1},${n2}`;

  const status = await run(['status', '--admin', both]);
  assert.equal(status.code, 0, status.stderr);
  const lines = status.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^NODE +READY +CONFIG +CONTROL-PLANE +CERTS +EXPIRES +REJECTED$/);
  assert.equal(lines.length, 3, status.stdout);
  assert.match(lines[1]!, /^node-1 +yes +v\d+ +connected +2 valid +23h \d+m +0$/);
  assert.match(lines[2]!, /^node-2 +yes +v\d+ +connected +\d valid +23h \d+m +0$/);
  assert.equal(lines[0]!.indexOf('READY'), lines[1]!.indexOf('yes'), 'columns are aligned');
  const statusJson = JSON.parse((await run(['status', '--admin', n1, '-o', 'json'])).stdout);
  assert.equal(statusJson.length, 1);
  assert.equal(statusJson[0].node, 'node-1');
  assert.equal(statusJson[0].ready, true);
  assert.equal(statusJson[0].controlPlane.connected, true);
  assert.deepEqual(statusJson[0].certificates.states, { valid: 2 });

  const workloads = await run(['workloads', '--admin', both]);
  assert.equal(workloads.code, 0, workloads.stderr);
  assert.match(workloads.stdout, /^NODE +NAMESPACE +NAME +IP +IDENTITY +CAPTURE +MTLS +CERT +EXPIRES$/m);
  assert.match(workloads.stdout, /^node-1 +shop +web-1 +\S+ +spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web +/m);
  const filtered = JSON.parse((await run(['workloads', '--admin', both, '--namespace', 'shop', '--workload', 'web', '-o', 'json'])).stdout) as { node: string; name: string; identity: string }[];
  assert.deepEqual(filtered.map((w) => [w.node, w.name]).sort(), [['node-1', 'web-1'], ['node-2', 'web-2']], 'the Deployment name matches its pods on every node');
  assert.equal(filtered[0]!.identity, 'spiffe://cluster.local/ns/shop/sa/web');
  const yaml = parseYaml((await run(['workloads', '--admin', n1, '--workload', 'api-1', '-o', 'yaml'])).stdout) as { name: string }[];
  assert.deepEqual(yaml.map((w) => w.name), ['api-1']);
  const none = await run(['workloads', '--admin', n1, '--namespace', 'nowhere']);
  assert.equal(none.code, 0);
  assert.equal(none.stdout, 'nothing found\n');

  const certs = await run(['certs', '--admin', n1]);
  assert.equal(certs.code, 0, certs.stderr);
  assert.match(certs.stdout, /^node-\S+ +spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api +valid +[0-9a-fA-F]+ +23h/m);
  const certsJson = JSON.parse((await run(['certs', '--admin', n1, '--namespace', 'shop', '-o', 'json'])).stdout) as { identity: string; trustBundle: string[] }[];
  assert.deepEqual(certsJson.map((c) => c.identity).sort(), ['spiffe://cluster.local/ns/shop/sa/api', 'spiffe://cluster.local/ns/shop/sa/web']);
  assert.equal(certsJson[0]!.trustBundle.length, 1);

  const policies = await run(['policies', '--admin', n1]);
  assert.equal(policies.code, 0, policies.stderr);
  assert.match(policies.stdout, /^\S+ +shop +only-web +ALLOW +app=api +1$/m);
  assert.deepEqual(JSON.parse((await run(['policies', '--admin', n1, '--namespace', 'batch', '-o', 'json'])).stdout), []);

  const routes = await run(['routes', '--admin', n1]);
  assert.equal(routes.code, 0, routes.stderr);
  assert.match(routes.stdout, /^\S+ +shop +web-split +HTTPRoute +shop\/web:80 +- +1 +shop\/web:80 \(100\)$/m);
  assert.equal((JSON.parse((await run(['routes', '--admin', n1, '-o', 'json'])).stdout) as { name: string }[])[0]!.name, 'web-split');

  const logging = await run(['logging', '--admin', n1]);
  assert.equal(logging.code, 0, logging.stderr);
  assert.match(logging.stdout, /^\S+ +info +none +\S*hbone\S*$/m);
  const changed = JSON.parse((await run(['logging', '--admin', n1, '--level', 'debug', '--tracers', 'hbone,certs', '-o', 'json'])).stdout);
  assert.deepEqual([changed[0].level, changed[0].tracers], ['debug', ['hbone', 'certs']]);
  const unknownTracer = await run(['logging', '--admin', n1, '--tracers', 'nosuch']);
  assert.equal(unknownTracer.code, 1, 'the node refuses an unknown tracer: exit 1 with its answer');
  assert.match(unknownTracer.stderr, /node node-1: \/logging\?tracers=nosuch answered 400: .*unknown tracer "nosuch"/);

  // Without a data plane the node says so; the command exits 1 with its answer.
  const noDataplane = await run(['connections', '--admin', n1]);
  assert.equal(noDataplane.code, 0, 'a node without a data plane has no connections');
  const explain = await run(['explain', '--admin', n1, '--source', '10.20.1.10', '--destination', '10.96.0.10:80']);
  assert.equal(explain.code, 1);
  assert.match(explain.stderr, /node node-1: \/explain\?source=10\.20\.1\.10&destination=10\.96\.0\.10%3A80 answered 404: explain: this node runs no data plane/);
  const tap = await run(['tap', '--admin', n1, '--count', '1']);
  assert.equal(tap.code, 1);
  assert.match(tap.stderr, /\/tap answered 404: tap: this node runs no data plane/);

  // A node that is gone: exit 1 naming it and what to check; status of a node that is down: exit 1.
  await stop1();
  const gone = await run(['status', '--admin', both]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, new RegExp(`node ${n1.replace(/\./g, '\\.')}: cannot reach the admin API at ${n1.replace(/\./g, '\\.')}: ECONNREFUSED; is the node running`));
});

test('cli operator commands: status exits 3 when a node is not all good (control plane gone)', async (t) => {
  // A fake admin API: the control plane disconnected, one certificate failed.
  const server = createServer((req, res) => {
    const body = req.url === '/config_dump'
      ? { node: 'n9', epoch: 'e', version: 4, synced: true, controlPlane: { address: 'cp:15010', connected: false, lastError: 'UNAVAILABLE', lastUpdate: null }, rejected: [], resources: [] }
      : req.url === '/certs'
        ? { trustBundle: { fingerprints: [] }, certificates: [{ identity: 'spiffe://cluster.local/ns/a/sa/b', state: 'failed', serial: null, notBefore: null, notAfter: null, renewAt: null, lastError: 'CSR refused' }] }
        : { error: 'no', code: 'NM_ADMIN_NO_ENDPOINT' };
    res.writeHead(req.url === '/config_dump' || req.url === '/certs' ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const addr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const status = await run(['status', '--admin', addr]);
  assert.equal(status.code, 3, status.stderr);
  assert.match(status.stdout, /^n9 +no +v4 +disconnected: UNAVAILABLE +1 failed +- +0$/m);
  const certs = await run(['certs', '--admin', addr]);
  assert.equal(certs.code, 3);
  assert.match(certs.stdout, /failed .* CSR refused$/m);
});

test('cli operator commands: hostile flags are usage errors (exit 2) naming the flag, before anything is sent', async () => {
  const cases: [string[], RegExp][] = [
    [['status', '--admin', 'localhost'], /--admin: "localhost" is not HOST:PORT/],
    [['status', '--admin', '127.0.0.1:99999'], /--admin: "127\.0\.0\.1:99999" is not HOST:PORT/],
    [['status', '--admin', '127.0.0.1:15000/../x'], /is not HOST:PORT/],
    [['status', '--admin', 'http://evil:80'], /is not HOST:PORT/],
    [['status', '--admin', '127.0.0.1:1,'], /"" is not HOST:PORT/],
    [['status', '--admin', '1.2.3.4:1', '--node', 'n1'], /--admin and --node exclude each other/],
    [['status', '--node', 'Node_1;rm'], /--node: "Node_1;rm" is not a Kubernetes node name/],
    [['status', '--mesh-namespace', '../etc'], /--mesh-namespace: "..\/etc" is not a namespace name/],
    [['workloads', '--admin', '127.0.0.1:1', '-o', 'xml'], /-o\/--output: "xml" is not one of table, json, yaml/],
    [['workloads', '--admin', '127.0.0.1:1', '--namespace', 'a/b'], /--namespace: "a\/b" is not a namespace name/],
    [['workloads', '--admin', '127.0.0.1:1', '--namespace', '\u001b]0;pwned\u0007'], /--namespace: ".*" is not a namespace name/],
    [['connections', '--admin', '127.0.0.1:1', '--workload', 'x'.repeat(300)], /--workload: "x+" is not a pod name/],
    [['certs', '--admin', '127.0.0.1:1', '--workload', 'web'], /Unknown option '--workload'/],
    [['explain', '--admin', '127.0.0.1:1', '--source', '10.0.0.1'], /missing required --destination/],
    [['explain', '--admin', '127.0.0.1:1', '--source', '10.0.0.1; DROP', '--destination', '10.0.0.2:80'], /--source: "10\.0\.0\.1; DROP" is not an IPv4 address/],
    [['explain', '--admin', '127.0.0.1:1', '--source', '10.0.0.1', '--destination', '10.0.0.2:0'], /--destination: "10\.0\.0\.2:0" is not IPv4:PORT/],
    [['explain', '--admin', '127.0.0.1:1', '--source', '10.0.0.1', '--destination', '10.0.0.2:80&x=1'], /is not IPv4:PORT/],
    [['tap', '--admin', '127.0.0.1:1', '--event', 'request,everything'], /--event: "everything" is not one of open, close, refusal, request/],
    [['tap', '--admin', '127.0.0.1:1', '--count', '-1'], /--count: "-1" is not a whole number from 1 to 1000000|--count/],
    [['tap', '--admin', '127.0.0.1:1', '--count', '1e9'], /--count: "1e9" is not a whole number/],
    [['tap', '--admin', '127.0.0.1:1', '--duration', '0'], /--duration: "0" is not a whole number from 1 to 86400/],
    [['logging', '--admin', '127.0.0.1:1', '--level', 'trace'], /--level: "trace" is not one of debug, info, warn, error/],
    [['logging', '--admin', '127.0.0.1:1', '--tracers', 'hbone&level=debug'], /--tracers: "hbone&level=debug" is not a comma-separated list/],
    [['routes', 'extra'], /Unexpected argument 'extra'/],
  ];
  const results: Run[] = [];
  for (let i = 0; i < cases.length; i += 6) results.push(...await Promise.all(cases.slice(i, i + 6).map(([args]) => run(args))));
  for (const [i, [args, message]] of cases.entries()) {
    const r = results[i]!;
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.doesNotMatch(r.stderr, /\u001b/, 'no escape sequence reaches the terminal');
  }
  const help = await run(['tap', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /-o, --output <value> +table, json or yaml \(default table\)/);
  assert.match(help.stdout, /exit codes:\n {2}0 {2}the answer is good/);
});

test('cli operator commands: without --admin, nodes are found through the Kubernetes API, and a kubeconfig without a cluster says what to do', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-inspect-kube-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'empty'), 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
  const r = await run(['status', '--kubeconfig', join(dir, 'empty')]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /no cluster in the kubeconfig: give --admin HOST:PORT to ask a node directly, or --kubeconfig FILE/);
  for (const bad of [join(dir, 'absent'), dir, '/dev/null']) {
    const b = await run(['workloads', '--kubeconfig', bad]);
    assert.equal(b.code, 1, `${bad}: ${b.stderr}`);
    assert.match(b.stderr, /nodemesh workloads: (cannot load the kubeconfig|no cluster in the kubeconfig)/, bad);
  }
});

test('cli output: tables escape control characters a peer could send, so no answer moves the cursor or forges a line', () => {
  assert.equal(safe('GET /\u001b[2J\u001b]0;owned\u0007\nFAKE'), 'GET /\\x1b[2J\\x1b]0;owned\\x07\\x0aFAKE');
  assert.equal(safe(''), '-');
  assert.equal(safe(null), '-');
  const out = table([{ header: 'A', value: (r: { a: string }) => r.a }, { header: 'B', value: () => 'x' }], [{ a: 'long-value' }, { a: '\r' }]);
  assert.equal(out, 'A           B\nlong-value  x\n\\x0d        x\n');
  const line = tapLine({
    node: 'n2', event: 'request', time: '2026-12-01T22:00:00.123Z', protocol: 'http1', method: 'GET', path: '/\u001b[31mred', status: 200, latencyMs: 1.5, reporter: 'destination',
    source: { ip: '10.0.0.1', workload: 'demo/client', identity: 'spiffe://cluster.local/ns/demo/sa/client' }, destination: { ip: '10.0.0.2', port: 80, workload: 'demo/server', identity: null },
  });
  assert.doesNotMatch(line, /\u001b/);
  assert.match(line, /^22:00:00\.123 +n2 +request +demo\/client +demo\/server:80 +GET \/\\x1b\[31mred 200 1\.5ms http1 \(destination\) +\[spiffe:\/\/cluster\.local\/ns\/demo\/sa\/client → no identity\]$/);
});

/**
 * A Kubernetes API server as far as the commands use it: the node pods' list
 * (label and field selectors honoured) and each pod's portforward WebSocket in
 * the v4.channel.k8s.io framing (a channel byte before every frame, the port
 * number first on each channel), each stream connected to that pod's admin API.
 */
async function fakeKubeApi(t: import('node:test').TestContext, pods: { name: string; node: string; admin: string }[]): Promise<{ kubeconfig: string; forwards: string[] }> {
  const { WebSocketServer } = await import('ws');
  const { connect } = await import('node:net');
  const forwards: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://api');
    if (url.pathname !== '/api/v1/namespaces/nodemesh-system/pods' || url.searchParams.get('labelSelector') !== 'app.kubernetes.io/name=nodemesh-node') {
      return void res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', status: 'Failure', code: 404 }));
    }
    const node = /^spec\.nodeName=(.+)$/.exec(url.searchParams.get('fieldSelector') ?? '')?.[1];
    const items = pods.filter((p) => !node || p.node === node).map((p) => ({
      metadata: { name: p.name, namespace: 'nodemesh-system' }, spec: { nodeName: p.node, containers: [{ name: 'node', image: 'nodemesh' }] }, status: { phase: 'Running' },
    }));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items }));
  });
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false) });
  server.on('upgrade', (req, socket, head) => {
    const m = /^\/api\/v1\/namespaces\/nodemesh-system\/pods\/([^/]+)\/portforward\?ports=15000$/.exec(req.url ?? '');
    const pod = pods.find((p) => p.name === m?.[1]);
    if (!pod) return void socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
    wss.handleUpgrade(req, socket, head, (ws) => {
      forwards.push(pod.name);
      const [host, port] = pod.admin.split(':');
      const upstream = connect(Number(port), host);
      const portBytes = Buffer.from([15000 & 0xff, 15000 >> 8]);
      ws.send(Buffer.concat([Buffer.from([0]), portBytes]));
      ws.send(Buffer.concat([Buffer.from([1]), portBytes]));
      upstream.on('data', (d: Buffer) => ws.send(Buffer.concat([Buffer.from([0]), d])));
      upstream.on('close', () => ws.close());
      upstream.on('error', () => ws.close());
      ws.on('message', (data: Buffer) => {
        if (data[0] === 0) upstream.write(data.subarray(1));
      });
      ws.on('close', () => upstream.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    wss.clients.forEach((c) => c.terminate());
    server.closeAllConnections();
    server.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-inspect-kube-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, `apiVersion: v1
kind: Config
clusters: [{ name: fake, cluster: { server: "http://127.0.0.1:${(server.address() as AddressInfo).port}", insecure-skip-tls-verify: true } }]
users: [{ name: operator, user: {} }]
contexts: [{ name: fake, context: { cluster: fake, user: operator } }]
current-context: fake
`);
  return { kubeconfig, forwards };
}

test('cli operator commands in a cluster: every node, or --node NAME, through a Kubernetes port-forward to its nodemesh-node pod, the tap included', async (t) => {
  const { AdminServer } = await import('../agent/admin-server.ts');
  const { ConfigStore } = await import('../daemon/config-store.ts');
  const { ConnectionTracker } = await import('../daemon/connection-tracker.ts');
  const { createMetrics } = await import('../daemon/metrics.ts');
  const trackers: InstanceType<typeof ConnectionTracker>[] = [];
  const admin = async (node: string) => {
    const store = new ConfigStore(node);
    store.apply({ epoch: 'e', version: 3, snapshot: true, upserts: [], removals: [] });
    const tracker = new ConnectionTracker(createMetrics(new (await import('prom-client')).Registry()));
    trackers.push(tracker);
    const server = await AdminServer.listen('127.0.0.1:0', {
      store, certs: { status: () => [], trustBundleFingerprints: () => [] },
      control: { status: () => ({ address: 'cp:15010', connected: true, lastError: null, lastConnected: null, lastUpdate: null, reconnects: 0 }), rejected: () => [] },
      connections: () => tracker.list(), tap: (listener, filter) => tracker.subscribe(listener, filter),
    });
    t.after(() => server.close());
    return server.address;
  };
  const pods = [
    { name: 'nodemesh-node-b7x2k', node: 'node-b', admin: await admin('node-b') },
    { name: 'nodemesh-node-a91qz', node: 'node-a', admin: await admin('node-a') },
  ];
  const { kubeconfig, forwards } = await fakeKubeApi(t, pods);

  const all = await run(['status', '--kubeconfig', kubeconfig]);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /^NODE +READY/);
  assert.deepEqual(all.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/ +/).slice(0, 3)), [['node-a', 'yes', 'v3'], ['node-b', 'yes', 'v3']], 'every node, in name order');
  assert.ok(forwards.includes('nodemesh-node-a91qz') && forwards.includes('nodemesh-node-b7x2k'));

  const one = JSON.parse((await run(['status', '--kubeconfig', kubeconfig, '--node', 'node-b', '-o', 'json'])).stdout) as { node: string }[];
  assert.deepEqual(one.map((s) => s.node), ['node-b']);
  const missing = await run(['status', '--kubeconfig', kubeconfig, '--node', 'node-z']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no running nodemesh-node pod on node node-z \(namespace nodemesh-system, app\.kubernetes\.io\/name=nodemesh-node\)/);

  // The tap's WebSocket through the port-forward.
  const child = spawn(process.execPath, [CLI, 'tap', '--kubeconfig', kubeconfig, '--node', 'node-a', '-o', 'json', '--count', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const nodeA = trackers[1]!;
  const deadline = Date.now() + 20_000;
  while (!nodeA.tap.active) {
    if (Date.now() > deadline) assert.fail('the tap never subscribed through the port-forward');
    await sleep(50);
  }
  nodeA.open({
    listener: 'inbound', reporter: 'destination', sourceIp: '10.1.0.7', sourcePrincipal: 'spiffe://cluster.local/ns/demo/sa/client',
    destinationIp: '10.2.0.9', destinationPort: 7000, destinationPrincipal: 'spiffe://cluster.local/ns/demo/sa/server', security: 'mutual_tls',
    bytes: () => ({ received: 0, sent: 0 }), destroy: () => {},
  });
  assert.equal(await exited, 0);
  const event = JSON.parse(out.trim()) as { node: string; event: string; source: { identity: string } };
  assert.deepEqual([event.node, event.event, event.source.identity], ['node-a', 'open', 'spiffe://cluster.local/ns/demo/sa/client']);
});
