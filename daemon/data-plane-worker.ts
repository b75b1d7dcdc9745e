// One data-plane worker thread (workers.ts starts them). It runs the node's
// listeners once more, on SO_REUSEPORT sockets of its own (on the node and in
// each captured pod's namespace), so the kernel spreads new connections over
// every worker; it serves from copies of the agent's config and certificates
// that the main thread pushes on every change, and answers the main thread's
// calls for the admin API, /metrics and the drain. It holds no agent state.

import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { logger, setLevel, setThreadLogFields, setTracers } from '../core/log.ts';
import { ConfigStore } from './config-store.ts';
import { CertReplica } from './cert-replica.ts';
import { SharedPodCounts } from './pod-counts.ts';
import { startDaemon } from './daemon.ts';
import type { Daemon } from './daemon.ts';
import { Tracing } from './tracing.ts';
import { workerError } from './worker-protocol.ts';
import type { FromWorker, LoggingState, ToWorker, WorkerCall, WorkerInit } from './worker-protocol.ts';

const init = workerData as WorkerInit;
const port = parentPort!;
setThreadLogFields({ worker: init.index });
const log = logger('daemon');

const send = (message: FromWorker) => port.postMessage(message);

function applyLogging(logging: LoggingState): void {
  setLevel(logging.level);
  setTracers(logging.tracers);
}

async function start(): Promise<{ daemon: Daemon; registry: Registry; config: ConfigStore; certs: CertReplica; tracing: Tracing; podCounts: SharedPodCounts }> {
  applyLogging(init.logging);
  const config = new ConfigStore(init.nodeName);
  config.load(init.snapshot);
  const certs = new CertReplica(init.certs);
  const registry = new Registry();
  const tracing = await Tracing.create({ nodeName: init.nodeName, ...init.tracing });
  const podCounts = new SharedPodCounts(init.podCounts.buffer, init.options.sourceLimits.workers ?? 1, init.index, init.podCounts.slots);
  const daemon = await startDaemon({ ...init.options, sourceLimits: { ...init.options.sourceLimits, shared: podCounts }, config, certs, registry, tracing, worker: init.index });
  for (const [podIp, netns] of init.pods) {
    // The main thread serves the pod already; a worker that cannot is one listener fewer there, not a failure.
    await daemon.attachPod(podIp, netns).catch((err: unknown) => log.error('a restarted worker could not serve a pod namespace', { podIp, netns, error: (err as Error).message }));
  }
  return { daemon, registry, config, certs, tracing, podCounts };
}

let running: Awaited<ReturnType<typeof start>>;
try {
  running = await start();
} catch (err) {
  send({ type: 'failed', error: workerError(err) });
  process.exit(1);
}
const { daemon, registry, config, certs, tracing, podCounts } = running;
const taps = new Map<number, () => void>();

const calls: { [C in WorkerCall]: (...args: never[]) => unknown } = {
  connections: () => daemon.connections(),
  metrics: () => registry.getMetricsAsJSON(),
  listeners: () => daemon.heldListeners(),
  attachPod: (podIp: string, netns: string) => daemon.attachPod(podIp, netns),
  detachPod: (podIp: string) => daemon.detachPod(podIp),
  drainConnections: (deadlineMs: number) => daemon.drainConnections(deadlineMs),
  stop: async () => {
    for (const untap of taps.values()) untap();
    await daemon.stop();
    await tracing.shutdown();
    // Nothing is left to serve: let the thread end.
    setImmediate(() => port.close());
  },
};

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'config':
      config.apply(message.update);
      break;
    case 'slots':
      podCounts.apply(message.changes);
      break;
    case 'certs':
      certs.replace(message.certs);
      break;
    case 'logging':
      applyLogging(message.logging);
      break;
    case 'tap':
      taps.set(message.id, daemon.tap((event) => send({ type: 'tap', id: message.id, event }), message.filter));
      break;
    case 'untap':
      taps.get(message.id)?.();
      taps.delete(message.id);
      break;
    case 'call': {
      const { id } = message;
      Promise.resolve()
        .then(() => (calls[message.call] as (...args: unknown[]) => unknown)(...message.args))
        .then((result) => send({ type: 'reply', id, result }), (err: unknown) => send({ type: 'reply', id, error: workerError(err) }));
      break;
    }
  }
});
send({ type: 'ready' });
