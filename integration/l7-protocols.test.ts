// What the L7 data plane carries besides routed HTTP/1 requests, end to end on
// the namespace cluster (client pod on n1, servers on n2): gRPC unary and
// server-streaming calls with their statuses and trailers, a 100 MiB upload
// streamed through (and how much the node processes grow meanwhile), and a server-speaks-first TCP
// protocol on an undeclared port greeting within the detection timeout. Needs
// root; fails (never skips) when the cluster cannot be set up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DEFAULT_DETECT_TIMEOUT_MS } from '../daemon/l7/detect.ts';
import type { ClusterSpec } from './cluster/plan.ts';
import { startServer } from './cluster/servers.ts';
import { appEcho, startHttpApp } from './e2e/http-apps.ts';
import { startMeshFixture, type MeshFixture, cniTitle } from './e2e/mesh-fixture.ts';

const PREFIX = 'nmk';
const HTTP_PORT = 8080;
const GRPC_PORT = 50051;
const BANNER_PORT = 7001;
const script = (name: string) => fileURLToPath(new URL(`./e2e/${name}`, import.meta.url));

const SPEC: ClusterSpec = {
  nodes: 2,
  namespaces: [{ name: 'shop', annotations: { 'nodemesh.io/mesh': 'enabled' } }],
  pods: [
    { name: 'client', namespace: 'shop', node: 'n1', serviceAccount: 'client' },
    { name: 'greeter', namespace: 'shop', node: 'n2', labels: { app: 'greeter' }, serviceAccount: 'greeter' },
    { name: 'sink', namespace: 'shop', node: 'n2', labels: { app: 'sink' }, serviceAccount: 'sink' },
    { name: 'banner', namespace: 'shop', node: 'n2', labels: { app: 'banner' }, serviceAccount: 'banner' },
  ],
  services: [
    { name: 'greeter', namespace: 'shop', selector: { app: 'greeter' }, ports: [{ name: 'grpc', port: GRPC_PORT, appProtocol: 'grpc' }] },
    { name: 'sink', namespace: 'shop', selector: { app: 'sink' }, ports: [{ name: 'http', port: 80, targetPort: HTTP_PORT }] },
    // Undeclared: the outbound side must detect that the client does not speak first.
    { name: 'banner', namespace: 'shop', selector: { app: 'banner' }, ports: [{ port: BANNER_PORT }] },
    { name: 'banner-tcp', namespace: 'shop', selector: { app: 'banner' }, ports: [{ port: BANNER_PORT, appProtocol: 'tcp' }] },
  ],
};

let fx: MeshFixture;

before(async () => {
  fx = await startMeshFixture(SPEC, 'proto', PREFIX);
  const grpcServer = fx.cluster.spawn(fx.cluster.pod('shop/greeter').netns, [process.execPath, script('grpc-app.ts'), 'serve', String(GRPC_PORT), 'greeter']);
  await Promise.all([
    grpcServer.waitForOutput('listening'),
    startHttpApp(fx.cluster, 'shop/sink', HTTP_PORT),
    startServer(fx.cluster, 'shop/banner', 'greeter', BANNER_PORT, 'banner'),
  ]);
});
after(() => fx?.teardown());

const vip = (service: string) => fx.cluster.service(`shop/${service}`).clusterIP;

interface GrpcOutcome {
  code: number;
  details: string;
  trailers: Record<string, string>;
  message?: string;
  replies?: number[];
}

test(cniTitle('gRPC unary and server-streaming calls cross nodes with their statuses, details and trailers intact'), async () => {
  const res = await fx.cluster.exec(fx.cluster.pod('shop/client').netns, [process.execPath, script('grpc-app.ts'), 'call', `${vip('greeter')}:${GRPC_PORT}`], { timeoutMs: 30_000 });
  const calls = JSON.parse(res.stdout) as Record<'hello' | 'missing' | 'count' | 'broken', GrpcOutcome>;
  const { hello, missing, count, broken } = calls;
  assert.deepEqual([hello.code, hello.message, hello.trailers['x-served-by']], [0, 'hello client from greeter', 'greeter'], JSON.stringify(hello));
  // A trailers-only answer: the status and its metadata travel in the only HEADERS frame.
  assert.deepEqual([missing.code, missing.details, missing.trailers['x-detail']], [5, 'no greeting for missing', 'asked for missing'], JSON.stringify(missing));
  assert.deepEqual([count.code, count.replies, count.trailers['x-count']], [0, [1, 2, 3, 4, 5], '5'], JSON.stringify(count));
  // Failing mid-stream: the replies already sent arrive, then RESOURCE_EXHAUSTED in the trailers.
  assert.deepEqual([broken.code, broken.details, broken.replies, broken.trailers['x-stopped']], [8, 'stopped after 2', [1, 2], '2'], JSON.stringify(broken));
});

/** VmRSS of a process in bytes, from /proc/<pid>/status. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kb, `no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) * 1024;
}

async function upload(bytes: number): Promise<{ status: number; body: string; ms: number }> {
  const res = await fx.cluster.exec(fx.cluster.pod('shop/client').netns, [process.execPath, script('upload-client.ts'), vip('sink'), '80', String(bytes)], { timeoutMs: 120_000 });
  return JSON.parse(res.stdout) as { status: number; body: string; ms: number };
}

const MiB = 1 << 20;

/** Runs `work` while sampling the RSS of `pids` every 50 ms; the peak growth over the RSS before it. */
async function peakGrowth<T>(pids: number[], work: () => Promise<T>): Promise<{ result: T; baseline: number[]; growth: number[] }> {
  const baseline = await Promise.all(pids.map(rssOf));
  const peak = [...baseline];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = await Promise.all(pids.map(rssOf));
      now.forEach((rss, i) => (peak[i] = Math.max(peak[i]!, rss)));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  try {
    const result = await work();
    return { result, baseline, growth: peak.map((p, i) => p - baseline[i]!) };
  } finally {
    sampling = false;
    await sampler;
  }
}

let uploadGrowth: { n1: number; n2: number } | undefined;

test(cniTitle('a 100 MiB HTTP upload streams from the client pod through both nodes to a pod that counts every byte'), async (t) => {
  const pids = ['n1', 'n2'].map((node) => fx.mesh.nodes.get(node)!.pid);
  for (const pid of pids) assert.match(await readFile(`/proc/${pid}/cmdline`, 'utf8'), /nodemesh\.mjs\0node\0/, `pid ${pid} must be a nodemesh node process`);
  // One small upload first, so the HTTP path's code and pools exist before the baseline.
  const warm = await upload(MiB);
  assert.equal(warm.status, 200, warm.body);
  const { result, growth, baseline } = await peakGrowth(pids, () => upload(100 * MiB));
  assert.equal(result.status, 200, result.body);
  const echo = appEcho({ ...result, id: 'upload', headers: {}, localPort: 0 });
  assert.deepEqual([echo.pod, echo.bytes], ['sink', 100 * MiB]);
  uploadGrowth = { n1: growth[0]!, n2: growth[1]! };
  t.diagnostic(`100 MiB in ${result.ms.toFixed(0)} ms (${(100 / (result.ms / 1000)).toFixed(0)} MiB/s); RSS n1 ${(baseline[0]! / MiB).toFixed(1)} MiB -> peak +${(growth[0]! / MiB).toFixed(1)} MiB, n2 ${(baseline[1]! / MiB).toFixed(1)} MiB -> peak +${(growth[1]! / MiB).toFixed(1)} MiB`);
});

/**
 * The bound moved with the young generation (agent/v8-flags.ts; 32 MiB at 1 MiB semi-spaces): 2 MiB ones
 * scavenge half as often, so more of the upload's garbage waits for its collection. Measured peak growth,
 * routed, two workers per node: 1 MiB 18.0-26.6 MiB, 2 MiB 23.2-33.7 MiB over 8 runs.
 */
const UPLOAD_GROWTH_BOUND = 40 * MiB;

test(cniTitle('during the 100 MiB upload neither node process grows by more than 40 MiB'), () => {
  assert.ok(uploadGrowth, 'the upload test must have run');
  assert.ok(uploadGrowth.n1 <= UPLOAD_GROWTH_BOUND, `source node n1 grew by ${(uploadGrowth.n1 / MiB).toFixed(1)} MiB`);
  assert.ok(uploadGrowth.n2 <= UPLOAD_GROWTH_BOUND, `destination node n2 grew by ${(uploadGrowth.n2 / MiB).toFixed(1)} MiB`);
});

async function greetingVia(service: string): Promise<{ greeting: string; connectedMs: number; greetingMs: number }> {
  const res = await fx.cluster.exec(fx.cluster.pod('shop/client').netns, [process.execPath, script('first-byte-client.ts'), vip(service), String(BANNER_PORT)], { timeoutMs: 15_000 });
  return JSON.parse(res.stdout) as { greeting: string; connectedMs: number; greetingMs: number };
}

test(cniTitle('a server-speaks-first service on an undeclared port greets through the mesh within the detection timeout'), async (t) => {
  // Warm both paths (tunnel, certificates) so the times compare detection alone.
  await greetingVia('banner-tcp');
  const declared = await greetingVia('banner-tcp');
  const detected = await greetingVia('banner');
  assert.equal(detected.greeting, 'hello from banner');
  assert.equal(declared.greeting, 'hello from banner');
  t.diagnostic(`greeting after ${detected.greetingMs.toFixed(1)} ms on the undeclared port, ${declared.greetingMs.toFixed(1)} ms on the port declared tcp (detection timeout ${DEFAULT_DETECT_TIMEOUT_MS} ms)`);
  // The wait is the detection timeout; anything well beyond it would be a delay the mesh adds.
  assert.ok(detected.greetingMs >= DEFAULT_DETECT_TIMEOUT_MS * 0.9, `greeting after ${detected.greetingMs.toFixed(1)} ms: faster than detection can give up`);
  assert.ok(detected.greetingMs < DEFAULT_DETECT_TIMEOUT_MS + 400, `greeting after ${detected.greetingMs.toFixed(1)} ms; the detection timeout is ${DEFAULT_DETECT_TIMEOUT_MS} ms`);
});
