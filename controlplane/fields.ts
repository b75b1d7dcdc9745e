// Typed reads of untrusted object fields for the converters. Every failure is an
// InvalidObjectError naming the object ("HTTPRoute default/foo") and the field
// path ("spec.rules[0].matches[1].path.value").

import { isIP } from 'node:net';
import { InvalidObjectError } from '../core/errors.ts';
import type { KubeObject } from './source.ts';

export type Fields = Record<string, unknown>;

/** "Kind namespace/name", or "Kind name" for cluster-scoped objects. */
export function describeObject(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  return `${obj.kind} ${ns ? `${ns}/` : ''}${obj.metadata?.name}`;
}

export class FieldReader {
  readonly object: string;

  constructor(object: string) {
    this.object = object;
  }

  fail(path: string, reason: string): never {
    throw new InvalidObjectError(this.object, path, reason);
  }

  record(value: unknown, path: string): Fields | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(path, `must be an object, got ${kindOf(value)}`);
    return value as Fields;
  }

  /** Rejects fields outside `known`, so a typo is not silently ignored. */
  knownOnly(fields: Fields, path: string, known: readonly string[]): void {
    for (const key of Object.keys(fields)) {
      if (!known.includes(key)) this.fail(fieldPath(path, key), `unknown field; expected one of ${known.join(', ')}`);
    }
  }

  array(value: unknown, path: string, max = Infinity): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(path, `must be a list, got ${kindOf(value)}`);
    if (value.length > max) this.fail(path, `at most ${max} entries allowed, got ${value.length}`);
    return value;
  }

  string(value: unknown, path: string): string | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') this.fail(path, `must be a string, got ${kindOf(value)}`);
    return value;
  }

  requiredString(value: unknown, path: string): string {
    const s = this.string(value, path);
    if (!s) this.fail(path, 'required');
    return s;
  }

  stringList(value: unknown, path: string): string[] {
    return this.array(value, path).map((v, i) => {
      const s = this.string(v, `${path}[${i}]`);
      if (!s) this.fail(`${path}[${i}]`, 'must be a non-empty string');
      return s;
    });
  }

  stringMap(value: unknown, path: string): Record<string, string> {
    const fields = this.record(value, path) ?? {};
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (typeof v !== 'string') this.fail(fieldPath(path, k), `must be a string, got ${kindOf(v)}`);
      out[k] = v;
    }
    return out;
  }

  integer(value: unknown, path: string, min: number, max: number): number | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(path, `must be an integer, got ${kindOf(value)}`);
    if (value < min || value > max) this.fail(path, `must be between ${min} and ${max}, got ${value}`);
    return value;
  }

  port(value: unknown, path: string): number | undefined {
    return this.integer(value, path, 1, 65535);
  }

  oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T | undefined {
    const s = this.string(value, path);
    if (s === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(s)) this.fail(path, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(s)}`);
    return s as T;
  }

  ip(value: unknown, path: string): string | undefined {
    const s = this.string(value, path);
    if (s !== undefined && isIP(s) === 0) this.fail(path, `not an IP address: ${JSON.stringify(s)}`);
    return s;
  }
}

/** Field path of a named child: "spec.selector" + "app" -> "spec.selector.app". */
export function fieldPath(path: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}
