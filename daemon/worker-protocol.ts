// The messages between the node's main thread and its data-plane workers
// (workers.ts starts them, data-plane-worker.ts runs in each). Everything here
// is structured-cloneable data: config updates, certificates, tap events.

import type { ConfigUpdate } from '../core/types.ts';
import type { Level, TracerSelector } from '../core/log.ts';
import type { ConfigSnapshot } from './config-store.ts';
import type { CertSet } from './cert-replica.ts';
import type { DaemonOptions } from './daemon.ts';
import type { SlotChanges } from './pod-counts.ts';
import type { TapEvent, TapFilter } from './tap.ts';
import type { TracingOptions } from './tracing.ts';

/** The daemon options a worker can be sent: the objects (config, certs, registry, tracing, shared counts) it makes itself. */
export type WorkerDaemonOptions = Omit<DaemonOptions, 'config' | 'certs' | 'registry' | 'tracing' | 'worker' | 'sourceLimits'> & {
  sourceLimits: Omit<NonNullable<DaemonOptions['sourceLimits']>, 'shared'>;
};

/** A worker's workerData. */
export interface WorkerInit {
  index: number;
  nodeName: string;
  options: WorkerDaemonOptions;
  tracing?: Omit<TracingOptions, 'nodeName'>;
  snapshot: ConfigSnapshot;
  certs: CertSet;
  /** The pods served in their own namespace when the worker starts (a restarted worker serves them too). */
  pods: [podIp: string, netns: string][];
  logging: LoggingState;
  /** The per pod counts of every worker (pod-counts.ts) and the slots assigned so far. */
  podCounts: { buffer: SharedArrayBuffer; slots: [uid: string, slot: number][] };
}

export interface LoggingState {
  level: Level;
  tracers: TracerSelector[];
}

/** What the main thread asks of a worker, and what each answers. */
export interface WorkerCalls {
  connections: { args: []; result: object[] };
  /** prom-client's getMetricsAsJSON() of the worker's registry. */
  metrics: { args: []; result: object[] };
  listeners: { args: []; result: { port: number; fd: number; netns?: string }[] };
  attachPod: { args: [podIp: string, netns: string]; result: void };
  detachPod: { args: [podIp: string]; result: void };
  drainConnections: { args: [deadlineMs: number]; result: void };
  stop: { args: []; result: void };
}
export type WorkerCall = keyof WorkerCalls;

export type ToWorker =
  | { type: 'config'; update: ConfigUpdate }
  | { type: 'slots'; changes: SlotChanges }
  | { type: 'certs'; certs: CertSet }
  | { type: 'logging'; logging: LoggingState }
  | { type: 'tap'; id: number; filter?: TapFilter }
  | { type: 'untap'; id: number }
  | { type: 'call'; id: number; call: WorkerCall; args: unknown[] };

/** An error as it crosses the thread boundary: its class is lost, its code and message are not. */
export interface WorkerError {
  code?: string;
  message: string;
}

export type FromWorker =
  | { type: 'ready' }
  | { type: 'failed'; error: WorkerError }
  | { type: 'reply'; id: number; result?: unknown; error?: WorkerError }
  | { type: 'tap'; id: number; event: TapEvent };

export function workerError(err: unknown): WorkerError {
  const e = err as { code?: unknown; message?: unknown };
  return { code: typeof e?.code === 'string' ? e.code : undefined, message: typeof e?.message === 'string' ? e.message : String(err) };
}
