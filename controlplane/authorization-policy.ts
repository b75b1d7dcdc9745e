// AuthorizationPolicy (security.nodemesh.io/v1alpha1), Istio's spec shape. Every
// field outside what nodemesh enforces is an error: a policy silently enforced
// with a field dropped would allow or deny more than its author wrote.

import { isIP } from 'node:net';
import type { AuthorizationPolicy, PolicyOperation, PolicyRule, PolicySource } from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, kindOf, quote } from './fields.ts';

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks'] as const;
const OPERATION_FIELDS = ['ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;

export function toAuthorizationPolicy(obj: KubeObject): AuthorizationPolicy {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj);
  const spec = f.record(obj.spec, 'spec') ?? {};
  f.knownOnly(spec, 'spec', ['selector', 'action', 'rules']);
  const selector = f.record(spec.selector, 'spec.selector');
  if (selector) f.knownOnly(selector, 'spec.selector', ['matchLabels']);
  const action = f.string(spec.action, 'spec.action') ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY') f.fail('spec.action', `must be ALLOW or DENY (AUDIT and CUSTOM are not supported), got ${quote(action)}`);
  return {
    namespace: meta.namespace || 'default',
    name: meta.name,
    selector: selector ? f.stringMap(selector.matchLabels, 'spec.selector.matchLabels') : null,
    action,
    rules: f.array(spec.rules, 'spec.rules').map((r, i) => rule(f, r, `spec.rules[${i}]`)),
  };
}

function rule(f: FieldReader, value: unknown, path: string): PolicyRule {
  const r = f.record(value, path) ?? {};
  f.knownOnly(r, path, ['from', 'to']);
  return {
    from: f.array(r.from, `${path}.from`).map((x, i) => {
      const p = `${path}.from[${i}]`;
      const entry = f.record(x, p) ?? {};
      f.knownOnly(entry, p, ['source']);
      return source(f, entry.source, `${p}.source`);
    }),
    to: f.array(r.to, `${path}.to`).map((x, i) => {
      const p = `${path}.to[${i}]`;
      const entry = f.record(x, p) ?? {};
      f.knownOnly(entry, p, ['operation']);
      return operation(f, entry.operation, `${p}.operation`);
    }),
  };
}

function source(f: FieldReader, value: unknown, path: string): PolicySource {
  const s = f.record(value, path);
  if (!s) f.fail(path, 'required');
  f.knownOnly(s, path, SOURCE_FIELDS);
  const list = (field: (typeof SOURCE_FIELDS)[number]) => f.stringList(s[field], `${path}.${field}`);
  const cidrs = (field: 'ipBlocks' | 'notIpBlocks') => {
    const blocks = list(field);
    blocks.forEach((b, i) => checkCidr(f, b, `${path}.${field}[${i}]`));
    return blocks;
  };
  return {
    principals: list('principals'),
    notPrincipals: list('notPrincipals'),
    namespaces: list('namespaces'),
    notNamespaces: list('notNamespaces'),
    ipBlocks: cidrs('ipBlocks'),
    notIpBlocks: cidrs('notIpBlocks'),
  };
}

function operation(f: FieldReader, value: unknown, path: string): PolicyOperation {
  const o = f.record(value, path);
  if (!o) f.fail(path, 'required');
  f.knownOnly(o, path, OPERATION_FIELDS);
  return {
    ports: ports(f, o.ports, `${path}.ports`),
    notPorts: ports(f, o.notPorts, `${path}.notPorts`),
    methods: f.stringList(o.methods, `${path}.methods`),
    notMethods: f.stringList(o.notMethods, `${path}.notMethods`),
    paths: f.stringList(o.paths, `${path}.paths`),
    notPaths: f.stringList(o.notPaths, `${path}.notPaths`),
  };
}

/** Istio writes ports as strings ("8080"); numbers are accepted too. */
function ports(f: FieldReader, value: unknown, path: string): number[] {
  return f.array(value, path).map((p, i) => {
    const n = typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : p;
    if (typeof n !== 'number') f.fail(`${path}[${i}]`, `must be a port number, got ${kindOf(p)}`);
    return f.port(n, `${path}[${i}]`)!;
  });
}

/** An address ("10.0.0.1") or a CIDR ("10.0.0.0/16", "fd00::/8"). */
function checkCidr(f: FieldReader, value: string, path: string): void {
  const [address, prefix, extra] = value.split('/');
  const family = isIP(address ?? '');
  if (family === 0 || extra !== undefined) f.fail(path, `not an IP address or CIDR: ${quote(value)}`);
  if (prefix === undefined) return;
  const max = family === 4 ? 32 : 128;
  if (!/^\d+$/.test(prefix) || Number(prefix) > max) f.fail(path, `prefix length must be 0-${max}: ${quote(value)}`);
}
