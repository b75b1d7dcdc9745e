// Logging as JSON lines on stderr. Levels are global and changeable at run time
// (POST /logging); `debug(name)` returns a named tracer that prints only while
// that name is enabled (NODEMESH_DEBUG=hbone,outbound or "*"). Tracer names are
// one registry (TRACERS below): `debug()` accepts only a registered name, and the
// admin API and NODEMESH_DEBUG refuse or report the others, so a name in the
// docs is a name that prints.

import { ErrorCode, NodemeshError } from './errors.ts';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Every named debug tracer, with what it traces. */
export const TRACERS = {
  hbone: 'HBONE sessions and streams, both ends',
  outbound: "each outbound connection's path decision",
  inbound: "each inbound stream or connection's admission",
  http: 'L7 routing decisions, per request',
  config: 'config updates as the agent applies them',
  certs: 'certificate requests and renewals',
  enrollment: 'capture rule changes',
} as const;

export type TracerName = keyof typeof TRACERS;
/** A tracer name, or "*" for all of them. */
export type TracerSelector = TracerName | '*';

export function isTracerName(name: string): name is TracerName {
  return Object.hasOwn(TRACERS, name);
}

/** Registered names first, as listed in error messages. */
export function knownTracers(): TracerName[] {
  return Object.keys(TRACERS) as TracerName[];
}

/** Splits a "hbone,outbound" list; "" (or only commas and spaces) is no tracer. */
export function parseTracerList(list: string): { tracers: TracerSelector[]; unknown: string[] } {
  const tracers: TracerSelector[] = [];
  const unknown: string[] = [];
  for (const name of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (name === '*' || isTracerName(name)) tracers.push(name);
    else unknown.push(name);
  }
  return { tracers, unknown };
}

export function unknownTracersMessage(unknown: readonly string[]): string {
  return `unknown tracer${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => JSON.stringify(n)).join(', ')}; known: ${knownTracers().join(', ')} (or * for all)`;
}

let threshold: Level = (process.env.NODEMESH_LOG_LEVEL as Level) in ORDER ? (process.env.NODEMESH_LOG_LEVEL as Level) : 'info';
let tracers = new Set<TracerSelector>();

const loggingListeners: (() => void)[] = [];

/** Called after the level or the tracers changed (daemon/workers.ts passes it on to the worker threads). */
export function onLoggingChange(listener: () => void): void {
  loggingListeners.push(listener);
}

export function setLevel(level: Level): void {
  if (!(level in ORDER)) throw new NodemeshError(ErrorCode.BAD_LOG_LEVEL, `unknown log level ${JSON.stringify(level)}; one of debug, info, warn, error`);
  threshold = level;
  loggingListeners.forEach((l) => l());
}

export function getLevel(): Level {
  return threshold;
}

/** Replaces the enabled tracers; an unregistered name changes nothing and throws. */
export function setTracers(names: readonly string[]): void {
  const unknown = names.filter((n) => n !== '*' && !isTracerName(n));
  if (unknown.length) throw new NodemeshError(ErrorCode.UNKNOWN_TRACER, unknownTracersMessage(unknown));
  tracers = new Set(names as readonly TracerSelector[]);
  loggingListeners.forEach((l) => l());
}

export function enabledTracers(): TracerSelector[] {
  return [...tracers];
}

/** Fields on every line of this thread: a data-plane worker names itself (daemon/workers.ts). */
let threadFields: Record<string, unknown> = {};

export function setThreadLogFields(fields: Record<string, unknown>): void {
  threadFields = fields;
}

function emit(level: Level, scope: string, msg: string, fields?: Record<string, unknown>): void {
  const line = JSON.stringify({ time: new Date().toISOString(), level, scope, msg, ...threadFields, ...fields });
  process.stderr.write(line + '\n');
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function logger(scope: string): Logger {
  const at = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] >= ORDER[threshold]) emit(level, scope, msg, fields);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export type Tracer = ((msg: string, fields?: Record<string, unknown>) => void) & { readonly enabled: boolean };

export function debug(name: TracerName): Tracer {
  const on = () => tracers.has(name) || tracers.has('*');
  const fn = (msg: string, fields?: Record<string, unknown>) => {
    if (on()) emit('debug', name, msg, fields);
  };
  Object.defineProperty(fn, 'enabled', { get: on });
  return fn as Tracer;
}

// NODEMESH_DEBUG: the known names are enabled, the others reported once.
{
  const fromEnv = parseTracerList(process.env.NODEMESH_DEBUG ?? '');
  tracers = new Set(fromEnv.tracers);
  if (fromEnv.unknown.length) logger('log').warn(`NODEMESH_DEBUG: ${unknownTracersMessage(fromEnv.unknown)}; ignoring them`, { enabled: [...tracers] });
}
