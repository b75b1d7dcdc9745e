// How the operator commands print: an aligned table for a terminal (the
// default), or the rows as JSON or YAML for a script. A table cell is what a
// node answered, and a node answers with what peers sent it (an HTTP path in
// the tap, a rejected object's name): control characters are shown escaped, so
// no answer can move the cursor, retitle the terminal or forge a line.

import { stringify } from 'yaml';
import { UsageError } from './args.ts';

export const OUTPUTS = ['table', 'json', 'yaml'] as const;
export type Output = (typeof OUTPUTS)[number];

export function parseOutput(command: string, value: string): Output {
  if (!(OUTPUTS as readonly string[]).includes(value)) {
    throw new UsageError(`nodemesh ${command}: -o/--output: ${JSON.stringify(value.slice(0, 40))} is not one of ${OUTPUTS.join(', ')}`);
  }
  return value as Output;
}

/** A cell as it is safe to print: C0/C1 controls and DEL as \xNN, newlines included. */
export function safe(value: unknown): string {
  const text = value === null || value === undefined || value === '' ? '-' : String(value);
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export interface Column<R> {
  header: string;
  value: (row: R) => unknown;
}

/** Rows under upper-case headers, each column as wide as its widest cell, two spaces apart. */
export function table<R>(columns: Column<R>[], rows: R[]): string {
  const cells = [columns.map((c) => c.header), ...rows.map((r) => columns.map((c) => safe(c.value(r))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
  return cells.map((line) => line.map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/** JSON (indented) or YAML of what the command answers; a table is the command's own. */
export function structured(output: Exclude<Output, 'table'>, value: unknown): string {
  return output === 'json' ? JSON.stringify(value, null, 2) + '\n' : stringify(value);
}

/** "3h 12m", "45s", "-2d" (expired): how far `iso` is from now. */
export function until(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const ms = Date.parse(iso) - now;
  if (!Number.isFinite(ms)) return '-';
  const sign = ms < 0 ? '-' : '';
  let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts = d ? [`${d}d`, `${h}h`] : h ? [`${h}h`, `${m}m`] : m ? [`${m}m`, `${s}s`] : [`${s}s`];
  return sign + parts.join(' ');
}
