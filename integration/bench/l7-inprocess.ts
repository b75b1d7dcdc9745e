// The HTTP/1 path of both nodes in one process on loopback, to measure a change
// to it without the cluster's noise: the source node's outbound side (told the
// original destination, a Service with appProtocol http), an HBONE tunnel over
// real TLS to the destination node's inbound side (which splices it, as no
// policy reads requests; with --destination-request-metrics it reads each one),
// and a loopback "pod" answering 64 bytes; wrk (one thread, 32 keep-alive
// connections) loads it from the other CPU:
//
//   taskset -c 1 node --max-semi-space-size=2 --external-memory-accounted-in-global-limit \
//     integration/bench/l7-inprocess.ts [rounds] [seconds] [--destination-request-metrics]
//
// (the V8 flags the node DaemonSet runs with, agent/v8-flags.ts). After a 3 s
// warm-up, one run under V8's sampling heap profiler, counting objects already
// collected too, prints the bytes allocated per request (stable from run to
// run, where req/s on a shared machine is not); then `rounds` runs print req/s
// and the process's CPU per 1,000 requests (both nodes and the pod together).

import { execFile } from 'node:child_process';
import http from 'node:http';
import { Session } from 'node:inspector/promises';
import { inProcessNodes, POD_IP } from './inprocess-nodes.ts';

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const [rounds, seconds] = [Number(positional[0] ?? 3), Number(positional[1] ?? 4)];
const destinationRequestMetrics = process.argv.includes('--destination-request-metrics');
const body = Buffer.alloc(64, 'x');
const origin = http.createServer((_req, res) => {
  res.setHeader('content-length', body.length);
  res.end(body);
});
await new Promise<void>((resolve) => origin.listen(0, POD_IP, resolve));
const port = await inProcessNodes(origin, { appProtocol: 'http', destinationRequestMetrics });

/** wrk on CPU 0; the requests it completed and its req/s. */
function wrk(runSeconds: number): Promise<{ requests: number; rps: number }> {
  return new Promise((resolve, reject) => {
    execFile('taskset', ['-c', '0', 'wrk', '-t1', '-c32', `-d${runSeconds}s`, `http://127.0.0.1:${port}/item`], (err, out) => {
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
