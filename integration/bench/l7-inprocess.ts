// The HTTP/1 path of both nodes in one process on loopback, to measure a change
// to it without the cluster's noise: the source node's outbound side (told the
// original destination, a Service with appProtocol http), an HBONE tunnel over
// real TLS to the destination node's inbound side (which splices it, as no
// policy reads requests; with --destination-request-metrics it reads each one),
// and a loopback "pod" answering 64 bytes; wrk (one thread, 32 keep-alive
// connections) loads it from the other CPU:
//
//   taskset -c 1 node --max-semi-space-size=2 integration/bench/l7-inprocess.ts [rounds] [seconds] [--destination-request-metrics]
//
// (the V8 flag the node DaemonSet runs with, agent/v8-flags.ts). After a 3 s
// warm-up, one run under V8's sampling heap profiler, counting objects already
// collected too, prints the bytes allocated per request (stable from run to
// run, where req/s on a shared machine is not); then `rounds` runs print req/s
// and the process's CPU per 1,000 requests (both nodes and the pod together).

import { execFile } from 'node:child_process';
import http from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { setLevel } from '../../core/log.ts';
import type { Resource, Service } from '../../core/types.ts';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { Admission } from '../../daemon/admission.ts';
import { ConfigStore } from '../../daemon/config-store.ts';
import { ConnectionTracker } from '../../daemon/connection-tracker.ts';
import { HbonePool } from '../../daemon/hbone-pool.ts';
import { InboundListener } from '../../daemon/inbound.ts';
import { HttpInbound } from '../../daemon/l7/http-inbound.ts';
import { createOutboundHttp } from '../../daemon/l7/outbound-http.ts';
import { LoadBalancer } from '../../daemon/load-balancer.ts';
import { createMetrics } from '../../daemon/metrics.ts';
import { OutboundListener } from '../../daemon/outbound.ts';
import { MemoryCertSource, spiffe, workload } from '../../daemon/testdata/mesh-fixture.ts';

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const [rounds, seconds] = [Number(positional[0] ?? 3), Number(positional[1] ?? 4)];
const destinationRequestMetrics = process.argv.includes('--destination-request-metrics');
// Every connection logs its open and close.
setLevel('warn');

const client = workload('frontend', '127.0.0.1', 'n2', { namespace: 'web' });
const pod = workload('cart', '127.0.0.3', 'n1');
const body = Buffer.alloc(64, 'x');
const origin = http.createServer((_req, res) => {
  res.setHeader('content-length', body.length);
  res.end(body);
});
await new Promise<void>((resolve) => origin.listen(0, pod.ip, resolve));
const service: Service = {
  namespace: 'shop', name: 'cart', vips: ['10.96.0.11'], opaquePorts: [],
  ports: [{ name: 'http', port: 80, targetPort: (origin.address() as AddressInfo).port, targetPortName: '', appProtocol: 'http' }],
  endpoints: [{ workloadUid: pod.uid, ip: pod.ip, ready: true }],
};
const resources: Resource[] = [client, pod].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w }));
resources.push({ kind: 'service', key: 'shop/cart', version: 1, service });
const update = { epoch: 'bench', version: 1, snapshot: true, upserts: resources, removals: [] };
const ca = await createMeshCa();

const destinationConfig = new ConfigStore('n1');
destinationConfig.apply(update);
const destinationMetrics = createMetrics(new Registry());
const destinationAdmission = new Admission(destinationConfig, destinationMetrics);
const inbound = await InboundListener.bind({
  config: destinationConfig, certs: await MemoryCertSource.issuing(ca, [spiffe(pod)]), tracker: new ConnectionTracker(destinationMetrics),
  admission: destinationAdmission, host: pod.ip, port: 0, http: new HttpInbound(destinationAdmission, destinationMetrics, { requestMetrics: destinationRequestMetrics }),
  destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
});

const sourceConfig = new ConfigStore('n2');
sourceConfig.apply(update);
const metrics = createMetrics(new Registry());
const pool = new HbonePool({ certs: await MemoryCertSource.issuing(ca, [spiffe(client)]), port: inbound.port });
const admission = new Admission(sourceConfig, metrics);
const outbound = await OutboundListener.bind({
  config: sourceConfig, tracker: new ConnectionTracker(metrics), admission, pool, balancer: new LoadBalancer(),
  http: createOutboundHttp({ config: sourceConfig, pool, admission, metrics }), host: '127.0.0.1', port: 0,
  destinationOf: () => ({ ip: '10.96.0.11', port: 80 }),
});

/** wrk on CPU 0; the requests it completed and its req/s. */
function wrk(runSeconds: number): Promise<{ requests: number; rps: number }> {
  return new Promise((resolve, reject) => {
    execFile('taskset', ['-c', '0', 'wrk', '-t1', '-c32', `-d${runSeconds}s`, `http://127.0.0.1:${outbound.port}/item`], (err, out) => {
      if (err) return reject(err);
      if (/Non-2xx|Socket errors/.test(out)) return reject(new Error(`wrk saw errors:\n${out}`));
      resolve({ requests: Number(/(\d+) requests in/.exec(out)?.[1]), rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]) });
    });
  });
}

await wrk(3);
const session = new Session();
session.connect();
await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
const sampled = await wrk(seconds);
const { profile } = await session.post('HeapProfiler.stopSampling');
session.disconnect();
type SampleNode = { selfSize: number; children: SampleNode[] };
const allocated = (n: SampleNode): number => n.children.reduce((sum, c) => sum + allocated(c), n.selfSize);
console.log(JSON.stringify({ allocated_kib_per_request: Math.round(allocated(profile.head as SampleNode) / sampled.requests / 102.4) / 10, requests: sampled.requests }));

for (let round = 0; round < rounds; round++) {
  const before = process.cpuUsage();
  const run = await wrk(seconds);
  const cpu = process.cpuUsage(before);
  console.log(JSON.stringify({ rps: run.rps, cpu_ms_per_1k_req: Math.round((cpu.user + cpu.system) / run.requests * 10) / 10 }));
}
process.exit(0);
