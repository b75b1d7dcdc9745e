// Flag parsing for every `nodemesh` subcommand: node:util parseArgs in strict
// mode, so an unknown or malformed flag is a UsageError (exit 2) that names it,
// followed by the subcommand's usage. `--help` is accepted everywhere.

import { parseArgs } from 'node:util';
import { ErrorCode, NodemeshError } from '../core/errors.ts';

export class UsageError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.USAGE, message);
  }
}

export interface FlagSpec {
  type: 'string' | 'boolean';
  description: string;
  /** For strings: the value when the flag is absent. */
  default?: string;
  required?: boolean;
  /** A one-letter alias (`-o` for `--output`). */
  short?: string;
}

export type FlagValues<S extends Record<string, FlagSpec>> = {
  [K in keyof S]: S[K]['type'] extends 'boolean' ? boolean : S[K]['required'] extends true ? string : S[K]['default'] extends string ? string : string | undefined;
} & { help: boolean };

export function usageOf(command: string, summary: string, spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([name, f]) => {
    const long = f.type === 'string' ? `--${name} <value>` : `--${name}`;
    const flag = f.short ? `-${f.short}, ${long}` : long;
    const notes = [f.required ? 'required' : '', f.default !== undefined ? `default ${f.default}` : ''].filter(Boolean).join(', ');
    return `  ${flag.padEnd(28)} ${f.description}${notes ? ` (${notes})` : ''}`;
  });
  return `usage: nodemesh ${command} [flags]\n\n${summary}\n\nflags:\n${rows.join('\n')}\n  ${'--help'.padEnd(28)} show this help\n`;
}

export interface ParseOptions {
  /** A boolean flag that makes the command need none of the required flags (like --uninstall). */
  exemptsRequired?: string;
}

/** Parses `argv` (without the subcommand); with --help (or `exemptsRequired`) set, required flags are not enforced. */
export function parseFlags<S extends Record<string, FlagSpec>>(command: string, summary: string, argv: string[], spec: S, opts: ParseOptions = {}): FlagValues<S> {
  const options: Record<string, { type: 'string' | 'boolean'; default?: string; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, f] of Object.entries(spec)) {
    options[name] = { type: f.type, ...(f.default !== undefined ? { default: f.default } : {}), ...(f.short ? { short: f.short } : {}) };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new UsageError(`nodemesh ${command}: ${(err as Error).message}\n\n${usageOf(command, summary, spec)}`);
  }
  if (!values.help && !(opts.exemptsRequired && values[opts.exemptsRequired])) {
    const missing = Object.entries(spec).filter(([name, f]) => f.required && !values[name]).map(([name]) => `--${name}`);
    if (missing.length > 0) throw new UsageError(`nodemesh ${command}: missing required ${missing.join(', ')}\n\n${usageOf(command, summary, spec)}`);
  }
  for (const [name, f] of Object.entries(spec)) if (f.type === 'boolean') values[name] = values[name] === true;
  values.help = values.help === true;
  return values as FlagValues<S>;
}
