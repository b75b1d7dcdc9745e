// The node's data plane on every core it may use. The main thread runs one
// daemon (worker 0) beside the agent; each further worker is a thread
// (data-plane-worker.ts) running the same listeners on SO_REUSEPORT sockets of
// its own, so the kernel spreads new connections over all of them, on the node
// and in each captured pod's namespace. One agent and one control-plane stream
// per node: the main thread pushes every config update and every certificate
// change to the workers, and gathers from them what the node answers as one:
// /metrics (summed), the admin API's connections and tap, the handover and the
// drain. A policy change reaches each worker's own copy of the config, which
// closes the connections it no longer allows there.
//
// Threads, not processes: the workers share the node's process (its fds, so
// the handover sees every listener as ours; its keys, which never leave it) and
// a worker costs an isolate (about 10 MiB), not a Node.js process.
// A worker that dies is started again (its connections are lost; the others'
// are not), with the config, certificates and pods of that moment.

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { AggregatorRegistry } from 'prom-client';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { enabledTracers, getLevel, logger, onLoggingChange } from '../core/log.ts';
import { startDaemon } from './daemon.ts';
import type { Daemon, DaemonOptions } from './daemon.ts';
import { certSetOf } from './cert-replica.ts';
import { PodSlotAllocator, SharedPodCounts } from './pod-counts.ts';
import { SUCCESSOR_WAIT_MS, handOver } from './handover.ts';
import type { ExplainQuery, Explanation } from './explain.ts';
import type { TapListener } from './connection-tracker.ts';
import type { TapFilter } from './tap.ts';
import type { TracingOptions } from './tracing.ts';
import type { FromWorker, ToWorker, WorkerCall, WorkerCalls, WorkerDaemonOptions, WorkerError, WorkerInit } from './worker-protocol.ts';

const log = logger('daemon');
/** Sources run as TypeScript, the bundle as dist/data-plane-worker.mjs beside its chunks (scripts/build.ts). */
const WORKER_ENTRY = new URL(import.meta.url.endsWith('.ts') ? './data-plane-worker.ts' : './data-plane-worker.mjs', import.meta.url);
/** An answer from a worker slower than this is an error (the admin API must not hang on a stuck worker). */
const CALL_TIMEOUT_MS = 10_000;
/** How long a stopping worker gets to close its listeners and connections before it is terminated. */
const STOP_TIMEOUT_MS = 2_000;

/**
 * How long `call` waits for a worker's answer. A drain lasts up to its
 * deadline (20 s by default, past the usual 10 s: a worker holding a
 * connection to the deadline failed the node's drain), plus the usual time to
 * answer. A stop is bounded tighter: terminate() ends a worker that does not
 * stop, and once one held the node's exit for the whole usual 10 s (routed
 * profile, two workers, after a drain deadline).
 */
export function callTimeoutMs<C extends WorkerCall>(call: C, args: WorkerCalls[C]['args']): number {
  if (call === 'drainConnections') return (args[0] as number) + CALL_TIMEOUT_MS;
  if (call === 'stop') return STOP_TIMEOUT_MS;
  return CALL_TIMEOUT_MS;
}
const RESTART_DELAY_MS = 1_000;
const MAX_RESTART_DELAY_MS = 30_000;
/** A worker that ran this long before it died restarts after the first delay again. */
const STABLE_MS = 60_000;

export interface DataPlaneOptions extends DaemonOptions {
  /** Data-plane threads, the main thread's included (default 1: the main thread only). */
  workers?: number;
  /** What each worker's request tracing is made from (the main thread's is `tracing`). */
  tracingOptions?: Omit<TracingOptions, 'nodeName'>;
  /** The worker threads' module (default data-plane-worker.ts beside this one); tests wrap it. */
  workerEntry?: URL;
}

/** The node's data plane, however many workers it runs. */
export interface DataPlane {
  readonly workers: number;
  ports: Daemon['ports'];
  /** Open connections of every worker, each naming its worker when there are several. */
  connections(): Promise<object[]>;
  explain(query: ExplainQuery): Explanation;
  tap(listener: TapListener, filter?: TapFilter): () => void;
  attachPod(podIp: string, netnsPath: string): Promise<void>;
  detachPod(podIp: string): void;
  attachedPods(): Map<string, string>;
  /** The node's metrics in the Prometheus text format: the registry's own plus every worker's, summed. */
  metrics(): Promise<string>;
  readonly metricsContentType: string;
  drain(deadlineMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** The CPUs this process may use: its affinity, and its cgroup's CPU quota (a container's limit) when it has one. */
export function usableCpus(): number {
  let cpus = availableParallelism();
  try {
    const [quota, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    if (quota !== 'max' && Number(period) > 0) cpus = Math.min(cpus, Math.max(1, Math.ceil(Number(quota) / Number(period))));
  } catch {
    // No cgroup v2 CPU controller here: the affinity is all we know.
  }
  return cpus;
}

export async function startDataPlane(opts: DataPlaneOptions): Promise<DataPlane> {
  const count = opts.workers ?? 1;
  if (!Number.isInteger(count) || count < 1) throw new NodemeshError(ErrorCode.USAGE, `data-plane workers: ${count} is not a whole number from 1`);
  const sourceLimits = { ...opts.sourceLimits, workers: count };
  // The per pod limits are the node's: every worker counts into one shared table.
  const podCounts = count > 1 ? new SharedPodCounts(SharedPodCounts.allocate(count), count, 0) : undefined;
  const slots = podCounts && new PodSlotAllocator(podCounts);
  const localUids = () => opts.config.localWorkloads().map((w) => w.uid);
  slots?.update(localUids());
  const main = await startDaemon({ ...opts, sourceLimits: { ...sourceLimits, shared: podCounts }, worker: count > 1 ? 0 : undefined });
  if (count === 1) {
    return {
      workers: 1, ports: main.ports,
      connections: async () => main.connections(),
      explain: (q) => main.explain(q), tap: (l, f) => main.tap(l, f),
      attachPod: (ip, netns) => main.attachPod(ip, netns), detachPod: (ip) => main.detachPod(ip), attachedPods: () => main.attachedPods(),
      metrics: () => opts.registry.metrics(), metricsContentType: opts.registry.contentType,
      drain: (deadlineMs) => main.drain(deadlineMs), stop: () => main.stop(),
    };
  }

  const { config, certs } = opts;
  const workerOptions: WorkerDaemonOptions = {
    bindHost: opts.bindHost, ports: main.ports, peerHbonePort: opts.peerHbonePort, hbone: opts.hbone, seriesGraceMs: opts.seriesGraceMs,
    sourceLimits, http: opts.http,
    // The main thread sets it, once per namespace.
    migrateQueuedConnections: false,
  };
  const localIdentities = () => config.localWorkloads().map((w) => config.identityOf(w));
  const taps = new Map<number, { listener: TapListener; filter?: TapFilter }>();
  let nextTap = 0;
  let stopping = false;

  const initFor = (index: number): WorkerInit => ({
    index, nodeName: config.nodeName, options: workerOptions, tracing: opts.tracingOptions,
    snapshot: config.snapshot(), certs: certSetOf(certs, localIdentities()), pods: [...main.attachedPods()],
    logging: { level: getLevel(), tracers: enabledTracers() },
    podCounts: { buffer: podCounts!.buffer, slots: podCounts!.slots() },
  });
  const threads = await Promise.all(Array.from({ length: count - 1 }, (_, i) => WorkerThread.start(i + 1, opts.workerEntry ?? WORKER_ENTRY, initFor, {
    onTap: (id, event) => taps.get(id)?.listener(event),
    // Its connections died with it: what it counted of each pod goes too, before it starts again.
    onExit: (index) => podCounts!.clearWorker(index),
    // Pods attached or detached between its start and its ready.
    syncPods: async (thread, startedWith) => {
      const now = main.attachedPods();
      const before = new Map(startedWith);
      for (const [ip, netns] of now) {
        if (before.get(ip) !== netns) await thread.call('attachPod', ip, netns).catch((err: unknown) => log.error('a restarted worker could not serve a pod namespace', { worker: thread.index, podIp: ip, error: (err as Error).message }));
      }
      for (const ip of before.keys()) if (!now.has(ip)) await thread.call('detachPod', ip).catch(() => {});
    },
    taps: () => [...taps].map(([id, t]) => ({ id, filter: t.filter })),
    stopping: () => stopping,
  }).catch(async (err: unknown) => {
    await main.stop();
    throw err;
  })));
  const broadcast = (message: ToWorker) => threads.forEach((t) => t.post(message));

  // After every config update and certificate change, in order: a worker never sees a workload before its update,
  // nor a source pod before its slot in the shared counts.
  config.onChange((update) => {
    const changes = slots!.update(localUids());
    if (changes.assigned.length || changes.freed.length) broadcast({ type: 'slots', changes });
    broadcast({ type: 'config', update });
  });
  let certsPending = false;
  const pushCerts = () => {
    if (certsPending) return;
    certsPending = true;
    setImmediate(() => {
      certsPending = false;
      broadcast({ type: 'certs', certs: certSetOf(certs, localIdentities()) });
    });
  };
  certs.onChange(pushCerts);
  config.onChange(pushCerts);
  onLoggingChange(() => broadcast({ type: 'logging', logging: { level: getLevel(), tracers: enabledTracers() } }));
  log.info('data-plane workers started', { workers: count });

  // A worker starting again is left out: it takes the pods of that moment when it is ready (syncPods),
  // and what it held died with it. One that dies during a call is left out of the answer, with a warning.
  const everyWorker = <C extends WorkerCall>(call: C, ...args: WorkerCalls[C]['args']) => Promise.all(threads.filter((t) => t.running).map((t) => t.call(call, ...args).catch((err: unknown) => {
    if (t.running) throw err;
    log.warn('a data-plane worker died during a call: left out', { worker: t.index, call, error: (err as Error).message });
    return undefined;
  }))).then((results) => results.filter((r) => r !== undefined) as WorkerCalls[C]['result'][]);
  return {
    workers: count,
    ports: main.ports,
    connections: async () => [main.connections(), ...await everyWorker('connections')].flat(),
    explain: (q) => main.explain(q),
    tap(listener, filter) {
      const id = nextTap++;
      taps.set(id, { listener, filter });
      const untapMain = main.tap(listener, filter);
      broadcast({ type: 'tap', id, filter });
      return () => {
        untapMain();
        taps.delete(id);
        broadcast({ type: 'untap', id });
      };
    },
    async attachPod(podIp, netnsPath) {
      await main.attachPod(podIp, netnsPath);
      try {
        await everyWorker('attachPod', podIp, netnsPath);
      } catch (err) {
        main.detachPod(podIp);
        void everyWorker('detachPod', podIp).catch(() => {});
        throw err;
      }
    },
    detachPod(podIp) {
      main.detachPod(podIp);
      everyWorker('detachPod', podIp).catch((err: unknown) => log.warn('a worker could not stop serving a pod namespace', { podIp, error: (err as Error).message }));
    },
    attachedPods: () => main.attachedPods(),
    async metrics() {
      // A restarting worker's series are missing from this scrape; the rest is still the node's.
      const perWorker = await everyWorker('metrics');
      const all = [await opts.registry.getMetricsAsJSON(), ...perWorker] as Parameters<typeof AggregatorRegistry.aggregate>[0];
      return AggregatorRegistry.aggregate(all).metrics();
    },
    metricsContentType: opts.registry.contentType,
    async drain(deadlineMs) {
      // Every worker's sockets are this process's: the successor must listen beside all of them.
      const held = [main.heldListeners(), ...await everyWorker('listeners')].flat();
      await handOver(held, Math.min(SUCCESSOR_WAIT_MS, deadlineMs / 4));
      stopping = true;
      await Promise.all([main.drainConnections(deadlineMs), everyWorker('drainConnections', deadlineMs)]);
    },
    async stop() {
      stopping = true;
      await Promise.all([main.stop(), ...threads.map((t) => t.stop())]);
    },
  };
}

interface WorkerHooks {
  onTap(id: number, event: import('./tap.ts').TapEvent): void;
  onExit(index: number): void;
  syncPods(thread: WorkerThread, startedWith: [string, string][]): Promise<void>;
  /** The admin API's open taps, for a restarted worker. */
  taps(): { id: number; filter?: TapFilter }[];
  stopping(): boolean;
}

/** One worker thread and its calls; started again when it dies while the node runs. */
class WorkerThread {
  readonly index: number;
  readonly #entry: URL;
  readonly #initFor: (index: number) => WorkerInit;
  readonly #hooks: WorkerHooks;
  #worker!: Worker;
  #ready = false;
  #startedAt = 0;
  #restartDelayMs = RESTART_DELAY_MS;
  #nextCall = 0;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  #exited: Promise<void> = Promise.resolve();

  private constructor(index: number, entry: URL, initFor: (index: number) => WorkerInit, hooks: WorkerHooks) {
    this.index = index;
    this.#entry = entry;
    this.#initFor = initFor;
    this.#hooks = hooks;
  }

  /** Resolves once the worker's listeners are bound; rejects with why it could not start (a failed bind stops the node's start). */
  static async start(index: number, entry: URL, initFor: (index: number) => WorkerInit, hooks: WorkerHooks): Promise<WorkerThread> {
    const thread = new WorkerThread(index, entry, initFor, hooks);
    await thread.#spawn();
    return thread;
  }

  get running(): boolean {
    return this.#ready;
  }

  #spawn(): Promise<void> {
    const init = this.#initFor(this.index);
    const worker = new Worker(this.#entry, { workerData: init, name: `nodemesh data-plane worker ${this.index}` });
    this.#worker = worker;
    this.#ready = false;
    this.#startedAt = Date.now();
    let exited!: () => void;
    this.#exited = new Promise((resolve) => (exited = resolve));
    return new Promise((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        switch (message.type) {
          case 'ready':
            this.#ready = true;
            for (const { id, filter } of this.#hooks.taps()) this.post({ type: 'tap', id, filter });
            void this.#hooks.syncPods(this, init.pods).then(() => resolve());
            break;
          case 'failed':
            reject(new NodemeshError(fromWorkerCode(message.error), `data-plane worker ${this.index} could not start: ${message.error.message}`));
            break;
          case 'reply': {
            const pending = this.#pending.get(message.id);
            if (!pending) break;
            this.#pending.delete(message.id);
            clearTimeout(pending.timer);
            if (message.error) pending.reject(new NodemeshError(fromWorkerCode(message.error), message.error.message));
            else pending.resolve(message.result);
            break;
          }
          case 'tap':
            this.#hooks.onTap(message.id, message.event);
            break;
        }
      });
      worker.on('error', (err) => {
        log.error('data-plane worker failed', { worker: this.index, error: String(err?.stack ?? err) });
        reject(err);
      });
      worker.on('exit', (code) => {
        exited();
        this.#hooks.onExit(this.index);
        for (const [id, pending] of this.#pending) {
          clearTimeout(pending.timer);
          pending.reject(new NodemeshError(ErrorCode.DATA_PLANE_WORKER, `data-plane worker ${this.index} exited (code ${code})`));
          this.#pending.delete(id);
        }
        const wasReady = this.#ready;
        this.#ready = false;
        if (!wasReady || this.#hooks.stopping()) return;
        // Its listeners closed with it; the other workers serve meanwhile.
        if (Date.now() - this.#startedAt >= STABLE_MS) this.#restartDelayMs = RESTART_DELAY_MS;
        const delay = this.#restartDelayMs;
        this.#restartDelayMs = Math.min(this.#restartDelayMs * 2, MAX_RESTART_DELAY_MS);
        log.error('data-plane worker exited: starting it again', { worker: this.index, code, inMs: delay });
        setTimeout(() => {
          if (this.#hooks.stopping()) return;
          this.#spawn().catch((err: unknown) => log.error('data-plane worker could not start again', { worker: this.index, error: (err as Error).message }));
        }, delay).unref();
      });
    });
  }

  post(message: ToWorker): void {
    if (this.#ready) this.#worker.postMessage(message);
  }

  call<C extends WorkerCall>(call: C, ...args: WorkerCalls[C]['args']): Promise<WorkerCalls[C]['result']> {
    if (!this.#ready) return Promise.reject(new NodemeshError(ErrorCode.DATA_PLANE_WORKER, `data-plane worker ${this.index} is not running (it is starting again)`));
    const id = this.#nextCall++;
    const timeoutMs = callTimeoutMs(call, args);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new NodemeshError(ErrorCode.DATA_PLANE_WORKER, `data-plane worker ${this.index} did not answer ${call} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.#worker.postMessage({ type: 'call', id, call, args } satisfies ToWorker);
    });
  }

  async stop(): Promise<void> {
    if (this.#ready) await this.call('stop').catch((err: unknown) => log.warn('a data-plane worker did not stop cleanly', { worker: this.index, error: (err as Error).message }));
    await this.#worker.terminate();
    await this.#exited;
  }
}

function fromWorkerCode(error: WorkerError): ErrorCode {
  return Object.values(ErrorCode).includes(error.code as ErrorCode) ? error.code as ErrorCode : ErrorCode.DATA_PLANE_WORKER;
}
