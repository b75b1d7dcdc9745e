// Logging as JSON lines on stderr. Levels are global and changeable at run time
// (POST /logging); `debug(name)` returns a named tracer that prints only while
// that name is enabled (NODEMESH_DEBUG=hbone,outbound or "*").

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold: Level = (process.env.NODEMESH_LOG_LEVEL as Level) in ORDER ? (process.env.NODEMESH_LOG_LEVEL as Level) : 'info';
let tracers = new Set((process.env.NODEMESH_DEBUG ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export function setLevel(level: Level): void {
  if (!(level in ORDER)) throw new Error(`unknown log level ${JSON.stringify(level)}`);
  threshold = level;
}

export function getLevel(): Level {
  return threshold;
}

export function setTracers(names: string[]): void {
  tracers = new Set(names);
}

export function enabledTracers(): string[] {
  return [...tracers];
}

function emit(level: Level, scope: string, msg: string, fields?: Record<string, unknown>): void {
  const line = JSON.stringify({ time: new Date().toISOString(), level, scope, msg, ...fields });
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

export function debug(name: string): Tracer {
  const fn = (msg: string, fields?: Record<string, unknown>) => {
    if (tracers.has(name) || tracers.has('*')) emit('debug', name, msg, fields);
  };
  Object.defineProperty(fn, 'enabled', { get: () => tracers.has(name) || tracers.has('*') });
  return fn as Tracer;
}
