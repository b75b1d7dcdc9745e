// The load generators, run in the client pod on the load CPU, and the parsing of
// what they print: wrk (saturation and new connections), the open-loop
// constant-rate client (latency), iperf3 (bulk throughput).

import { fileURLToPath } from 'node:url';
import type { Cluster } from '../cluster/cluster.ts';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import { LOAD_CPU } from './bench-env.ts';

export const RATE_CLIENT = fileURLToPath(new URL('./rate-client.ts', import.meta.url));

export interface Measured<T> {
  /** The command as run inside the client pod's namespace. */
  command: string[];
  value: T;
}

export class LoadToolError extends NodemeshError {
  constructor(tool: string, message: string) {
    super(ErrorCode.BENCH_TOOL, `${tool}: ${message}`);
  }
}

export interface WrkResult {
  rps: number;
  requests: number;
  errors: number;
}

/** Parses wrk's summary; socket errors and non-2xx responses are summed into `errors`. */
export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const requests = /(\d+) requests in/.exec(out);
  if (!rps || !requests) throw new LoadToolError('wrk', `no "Requests/sec" in its output:\n${out}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const errors = (socket ? socket.slice(1).reduce((a, n) => a + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { rps: Number(rps[1]), requests: Number(requests[1]), errors };
}

export function wrkCommand(url: string, opts: { connections: number; seconds: number; closeEach?: boolean }): string[] {
  return [
    'taskset', '-c', LOAD_CPU, 'wrk', '-t1', `-c${opts.connections}`, `-d${opts.seconds}s`,
    ...(opts.closeEach ? ['-H', 'Connection: close'] : []),
    url,
  ];
}

export async function runWrk(cluster: Cluster, netns: string, command: string[]): Promise<WrkResult> {
  const res = await cluster.exec(netns, command, { timeoutMs: 120_000 });
  return parseWrk(res.stdout);
}

export interface LatencyResult {
  sent: number;
  completed: number;
  errors: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  /** The client's own CPU time over the run (user + system). */
  cpu_ms: number;
}

/** `sharedCpu`: another load generator runs on the load CPU meanwhile (rate-client.ts's `sleep`). */
export function rateCommand(host: string, port: number, opts: { rate: number; seconds: number; connections: number; sharedCpu?: boolean }): string[] {
  return ['taskset', '-c', LOAD_CPU, process.execPath, RATE_CLIENT, host, String(port), String(opts.rate), String(opts.seconds), String(opts.connections), ...(opts.sharedCpu ? ['sleep'] : [])];
}

export async function runRate(cluster: Cluster, netns: string, command: string[]): Promise<LatencyResult> {
  const res = await cluster.exec(netns, command, { timeoutMs: 120_000 });
  try {
    return JSON.parse(res.stdout) as LatencyResult;
  } catch {
    throw new LoadToolError('rate-client', `unreadable result:\n${res.stdout}\n${res.stderr}`);
  }
}

export function iperfCommand(host: string, port: number, seconds: number): string[] {
  return ['taskset', '-c', LOAD_CPU, 'iperf3', '-c', host, '-p', String(port), '-t', String(seconds), '-J'];
}

/** Gb/s the receiver saw over the whole test. */
export function parseIperf(out: string): number {
  let report: { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  try {
    report = JSON.parse(out);
  } catch {
    throw new LoadToolError('iperf3', `unreadable JSON:\n${out.slice(0, 2000)}`);
  }
  const bps = report.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new LoadToolError('iperf3', report.error ?? 'no end.sum_received.bits_per_second in its report');
  return bps / 1e9;
}

export async function runIperf(cluster: Cluster, netns: string, command: string[]): Promise<number> {
  const res = await cluster.exec(netns, command, { timeoutMs: 120_000, allowFailure: true });
  return parseIperf(res.stdout);
}
