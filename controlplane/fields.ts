// Typed reads of untrusted object fields for the converters. Every failure is an
// InvalidObjectError naming the object ("HTTPRoute default/foo") and the field
// path ("spec.rules[0].matches[1].path.value").

import { isIP } from 'node:net';
import { InvalidObjectError } from '../core/errors.ts';
import type { KubeObject } from './source.ts';

export type Fields = Record<string, unknown>;

/**
 * "Kind namespace/name", or "Kind name" for cluster-scoped objects. Safe on any
 * value: it names objects in errors about their own malformed fields.
 */
export function describeObject(obj: KubeObject): string {
  const meta: unknown = (obj as unknown as Fields | null)?.metadata;
  const field = (key: string): unknown => (typeof meta === 'object' && meta !== null ? (meta as Fields)[key] : undefined);
  const ns = field('namespace');
  const name = field('name');
  const kind = typeof obj?.kind === 'string' ? obj.kind : 'object';
  return `${shorten(kind)} ${typeof ns === 'string' && ns ? `${shorten(ns)}/` : ''}${typeof name === 'string' && name ? shorten(name) : '<no name>'}`;
}

/** The envelope every converter reads first: metadata is a map, the name and namespace are Kubernetes names. */
export interface Metadata {
  fields: Fields;
  name: string;
  /** '' when the object names none. */
  namespace: string;
}

// Kubernetes' own rules (RFC 1123): a namespace is a label, most object names are
// subdomains. Names become map keys ("namespace/name") and SPIFFE path segments,
// so a "/" in one must not reach the model.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class FieldReader {
  readonly object: string;

  constructor(object: string) {
    this.object = object;
  }

  fail(path: string, reason: string): never {
    throw new InvalidObjectError(this.object, path, reason);
  }

  /** metadata, its name (a DNS subdomain, or a label with `nameIsLabel`) and namespace (a label). */
  metadata(obj: KubeObject, nameIsLabel = false): Metadata {
    const fields = this.record((obj as unknown as Fields).metadata, 'metadata');
    if (!fields) this.fail('metadata', 'required');
    const name = this.requiredString(fields.name, 'metadata.name');
    this.dnsName(name, 'metadata.name', nameIsLabel);
    const namespace = this.string(fields.namespace, 'metadata.namespace') ?? '';
    if (namespace) this.dnsName(namespace, 'metadata.namespace', true);
    return { fields, name, namespace };
  }

  /** A Kubernetes name: a DNS label (63 characters) or subdomain (253). */
  dnsName(value: string, path: string, label: boolean): void {
    const max = label ? 63 : 253;
    if (value.length > max || !(label ? DNS_LABEL : DNS_SUBDOMAIN).test(value)) {
      this.fail(path, `not a valid Kubernetes name (lower-case letters, digits and "-"${label ? '' : ', dot-separated'}; at most ${max} characters): ${quote(value)}`);
    }
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
    // A copy without holes: what each entry is, the caller checks.
    return Array.from(value);
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
      // A "__proto__" key is data here, as YAML and JSON parsers leave it.
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  integer(value: unknown, path: string, min: number, max: number): number | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(path, `must be an integer, got ${kindOf(value)}`);
    if (value < min || value > max) this.fail(path, `must be between ${min} and ${max}, got ${value}`);
    return value;
  }

  boolean(value: unknown, path: string): boolean | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'boolean') this.fail(path, `must be true or false, got ${kindOf(value)}`);
    return value;
  }

  port(value: unknown, path: string): number | undefined {
    return this.integer(value, path, 1, 65535);
  }

  oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T | undefined {
    const s = this.string(value, path);
    if (s === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(s)) this.fail(path, `must be one of ${allowed.join(', ')}, got ${quote(s)}`);
    return s as T;
  }

  ip(value: unknown, path: string): string | undefined {
    const s = this.string(value, path);
    if (s !== undefined && isIP(s) === 0) this.fail(path, `not an IP address: ${quote(s)}`);
    return s;
  }
}

/** Field path of a named child: "spec.selector" + "app" -> "spec.selector.app". */
export function fieldPath(path: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${path}.${key}` : `${path}[${quote(key)}]`;
}

/** What a value is, for a message: "a list", "null", "string \"x\"". */
export function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${typeof value === 'string' ? quote(value) : shorten(String(value as number))}`;
}

/** A value for a message: quoted, and cut short, so a huge field cannot make a huge error. */
export function quote(value: string): string {
  return JSON.stringify(shorten(value));
}

function shorten(value: string): string {
  return value.length > 256 ? `${value.slice(0, 256)}…` : value;
}
