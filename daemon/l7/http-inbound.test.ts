// The destination side for plaintext clients (outside the mesh): the inbound
// plaintext listener with HTTP handling, on loopback addresses standing in for a
// pod (127.0.0.5) and an outside client (127.0.0.9).

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import type { AuthorizationPolicy, Service } from '../../core/types.ts';
import { ConfigStore } from '../config-store.ts';
import { createMetrics } from '../metrics.ts';
import { ConnectionTracker } from '../connection-tracker.ts';
import { LoadBalancer } from '../load-balancer.ts';
import { InboundPlaintextListener } from '../inbound-plaintext.ts';
import { applyConfig, workload } from '../testdata/mesh-fixture.ts';
import { HttpInbound } from './http-inbound.ts';
import { Admission } from '../admission.ts';
import { FAIR_LAG_MS, FairShare } from '../fair-share.ts';

const pod = workload('inventory', '127.0.0.5', 'n1');
const OUTSIDER = '127.0.0.9';

const PUBLIC_ONLY: AuthorizationPolicy = {
  namespace: 'shop', name: 'public-only', selector: { app: 'inventory' }, action: 'ALLOW',
  rules: [{ from: [], to: [{ ports: [], notPorts: [], methods: ['GET'], notMethods: [], paths: ['/public/*'], notPaths: [] }] }],
};

/** The pod's server answers its path and x-forwarded-for unless `answer` says otherwise; `fairShare` weighs the HTTP path. */
async function setup(t: TestContext, policies: AuthorizationPolicy[], opts: { answer?: http.RequestListener; fairShare?: FairShare } = {}) {
  const server = http.createServer(opts.answer ?? ((req, res) => res.end(JSON.stringify({ path: req.url, xff: req.headers['x-forwarded-for'] }))));
  await new Promise<void>((resolve) => server.listen(0, pod.ip, resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  const service: Service = {
    namespace: 'shop', name: 'inventory', vips: ['10.96.0.20'], ports: [{ name: 'http', port: 80, targetPort: port, targetPortName: '', appProtocol: '' }],
    endpoints: [{ workloadUid: pod.uid, ip: pod.ip, ready: true }], opaquePorts: [],
  };
  const config = new ConfigStore('n1');
  applyConfig(config, { workloads: [pod], services: [service], policies });
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const listener = await InboundPlaintextListener.bind({
    config, tracker: new ConnectionTracker(metrics), admission: new Admission(config, metrics), balancer: new LoadBalancer(),
    http: new HttpInbound(new Admission(config, metrics), metrics, { fairShare: opts.fairShare }),
    host: '127.0.0.1', port: 0, destinationOf: () => ({ ip: pod.ip, port }),
  });
  t.after(() => listener.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const request = (method: string, path: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: listener.port, localAddress: OUTSIDER, method, path, agent }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
  /** Raw bytes from the outsider; what came back before the connection closed. */
  const raw = (bytes: string) => new Promise<string>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: listener.port, localAddress: OUTSIDER });
    let got = '';
    s.on('data', (c) => (got += c));
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
    s.end(bytes);
  });
  return { request, raw, registry, listenerPort: listener.port };
}

test('plaintext HTTP to a declared HTTP port is authorized per request, with x-forwarded-for for the outside client', async (t) => {
  const { request, registry } = await setup(t, [PUBLIC_ONLY]);
  const ok = await request('GET', '/public/a');
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), { path: '/public/a', xff: OUTSIDER });
  assert.equal((await request('POST', '/public/a')).status, 403);
  assert.equal((await request('GET', '/private')).status, 403);
  assert.equal((await request('GET', '/public/b')).status, 200);
  const text = await registry.metrics();
  assert.match(text, /nodemesh_requests_total\{reporter="destination",source_workload="unknown",[^}]*source_principal="unknown",destination_workload="inventory",[^}]*destination_service="inventory.shop.svc.cluster.local",connection_security_policy="none",response_code="403"\} 2/);
});

test('non-HTTP bytes on a declared HTTP port fall back to TCP: carried without L7 policies, refused when an ALLOW needs L7 fields', async (t) => {
  const open = await setup(t, []);
  assert.match(await open.raw('hello\r\n\r\n'), /^HTTP\/1.1 400 Bad Request/, 'the bytes reached the pod, which answered for itself');
  const guarded = await setup(t, [PUBLIC_ONLY]);
  assert.equal(await guarded.raw('hello\r\n\r\n'), '', 'an ALLOW rule on methods/paths never matches TCP');
});

test('HTTP at the destination is read under its source: the pod\'s answers to the heavier client are read less', async (t) => {
  const throttled: { key: string; level: number }[][] = [];
  const fair = new FairShare({ tickMs: 40, onThrottle: (p) => throttled.push(p) });
  t.after(() => fair.stop());
  const { listenerPort } = await setup(t, [], { answer: (req, res) => res.end(Buffer.alloc(Number(req.url!.slice(1)))), fairShare: fair });
  // Two clients from outside the mesh, by address; each sends the same requests, only the answers differ.
  const client = (localAddress: string) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    return (bytes: number) => new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: listenerPort, localAddress, path: `/${bytes}`, agent }, (res) => {
        let got = 0;
        res.on('data', (c: Buffer) => (got += c.length));
        res.on('end', () => resolve(got));
      });
      req.on('error', reject);
      req.end();
    });
  };
  const heavy = client('127.0.0.7');
  const light = client('127.0.0.8');
  assert.deepEqual(await Promise.all([heavy(10), light(10)]), [10, 10]);
  fair.rebalance(0); // the baseline
  assert.deepEqual(await Promise.all([heavy(256 * 1024), light(10)]), [256 * 1024, 10]);
  fair.rebalance(FAIR_LAG_MS);
  assert.deepEqual(throttled, [[{ key: 'ip:127.0.0.7', level: 1 }]]);
});

test('the destination forwards with node:http: a chunked body and its trailers reach the client, the pod\'s hop-by-hop headers do not', async (t) => {
  const { listenerPort } = await setup(t, [], {
    answer: (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'keep-alive': 'timeout=99', trailer: 'x-checksum' });
      res.write('first ');
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end('last');
    },
  });
  const got = await new Promise<{ body: string; headers: http.IncomingHttpHeaders; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: listenerPort, localAddress: OUTSIDER, path: '/', agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ body, headers: res.headers, trailers: res.trailers }));
    }).on('error', reject);
  });
  assert.equal(got.body, 'first last');
  assert.equal(got.headers['content-type'], 'text/plain');
  assert.equal(got.headers['keep-alive'], undefined, 'the pod\'s keep-alive settings are its connection\'s, not the client\'s');
  assert.equal(got.trailers['x-checksum'], 'abc');
});

test('regression: a client that goes away mid-response ends the destination\'s request to the pod', async (t) => {
  let podSawClose!: () => void;
  const closed = new Promise<void>((resolve) => (podSawClose = resolve));
  const { listenerPort } = await setup(t, [], {
    answer: (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      res.on('close', () => podSawClose());
    },
  });
  await new Promise<void>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: listenerPort, localAddress: OUTSIDER, path: '/stream', agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => {});
    req.setTimeout(5_000, () => reject(new Error('no first event')));
  });
  await closed;
});
