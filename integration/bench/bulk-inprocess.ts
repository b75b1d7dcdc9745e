// One TCP connection's upload through both nodes' L4 path in one process on
// loopback (inprocess-nodes.ts: outbound side, one HBONE tunnel over real TLS,
// inbound side, a sink "pod"), to measure a change to the relay or to GC
// without the cluster's noise. The client writes 128 KiB chunks as fast as the
// path takes them:
//
//   taskset -c 1 node --max-semi-space-size=2 --external-memory-accounted-in-global-limit \
//     integration/bench/bulk-inprocess.ts [GiB]
//
// (the V8 flags the node DaemonSet runs with, agent/v8-flags.ts; add --trace-gc
// to see the collections). Prints Gb/s, the process's peak RSS, and its CPU
// per GiB (both nodes, the client and the sink together).

import net from 'node:net';
import { inProcessNodes, POD_IP } from './inprocess-nodes.ts';

const total = Number(process.argv[2] ?? 2) * 2 ** 30;
let received = 0;
const sink = net.createServer((socket) => socket.on('data', (chunk: Buffer) => { received += chunk.length; }));
await new Promise<void>((resolve) => sink.listen(0, POD_IP, resolve));
const port = await inProcessNodes(sink, { appProtocol: 'tcp' });

const client = net.connect(port, '127.0.0.1');
await new Promise((resolve) => client.once('connect', resolve));
const chunk = Buffer.alloc(128 * 1024, 7);
const started = performance.now();
const cpu = process.cpuUsage();
let sent = 0;
const pump = (): void => {
  while (sent < total) {
    sent += chunk.length;
    if (!client.write(chunk)) return void client.once('drain', pump);
  }
};
pump();
let peakRss = 0;
while (received < total) {
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
  await new Promise((resolve) => setTimeout(resolve, 5));
}
const ms = performance.now() - started;
const used = process.cpuUsage(cpu);
console.log(JSON.stringify({
  gbps: Math.round(total * 8 / ms / 1e4) / 100,
  peak_rss_mib: Math.round(peakRss / 2 ** 20),
  cpu_s_per_gib: Math.round((used.user + used.system) / 1e3 / (total / 2 ** 30)) / 1e3,
}));
process.exit(0);
