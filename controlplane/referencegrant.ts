// ReferenceGrant (gateway.networking.k8s.io/v1beta1): the owner of a namespace
// lets objects of another namespace refer to things in theirs. nodemesh reads it
// for one question, asked when a route is compiled: may a route (HTTPRoute or
// GRPCRoute) of namespace F send to Service S of namespace T? Yes when a grant in
// T lists `from` {group gateway.networking.k8s.io, that kind, namespace F} and `to`
// {core group, kind Service, name S or no name}. Entries for other kinds are valid
// and simply grant nothing here. Validation follows the spec's schema.

import type { KubeObject } from './source.ts';
import { FieldReader, describeObject } from './fields.ts';

const GATEWAY_GROUP = 'gateway.networking.k8s.io';
const GROUP = /^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const KIND = /^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/;

export interface GrantFrom {
  group: string;
  kind: string;
  namespace: string;
}

export interface GrantTo {
  group: string;
  kind: string;
  /** '' grants every object of the kind. */
  name: string;
}

export interface MeshReferenceGrant {
  namespace: string;
  name: string;
  from: GrantFrom[];
  to: GrantTo[];
}

export function toReferenceGrant(obj: KubeObject): MeshReferenceGrant {
  const f = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj);
  const spec = f.record(obj.spec, 'spec') ?? f.fail('spec', 'required');
  f.knownOnly(spec, 'spec', ['from', 'to']);
  const from = f.array(spec.from, 'spec.from', 16).map((x, i) => {
    const p = `spec.from[${i}]`;
    const e = f.record(x, p) ?? {};
    f.knownOnly(e, p, ['group', 'kind', 'namespace']);
    const namespace = f.requiredString(e.namespace, `${p}.namespace`);
    f.dnsName(namespace, `${p}.namespace`, true);
    return { group: group(f, e.group, `${p}.group`), kind: kind(f, e.kind, `${p}.kind`), namespace };
  });
  const to = f.array(spec.to, 'spec.to', 16).map((x, i) => {
    const p = `spec.to[${i}]`;
    const e = f.record(x, p) ?? {};
    f.knownOnly(e, p, ['group', 'kind', 'name']);
    const name = f.string(e.name, `${p}.name`) ?? '';
    if (name) f.dnsName(name, `${p}.name`, false);
    return { group: group(f, e.group, `${p}.group`), kind: kind(f, e.kind, `${p}.kind`), name };
  });
  if (!from.length) f.fail('spec.from', 'at least one entry required');
  if (!to.length) f.fail('spec.to', 'at least one entry required');
  return { namespace: meta.namespace || 'default', name: meta.name, from, to };
}

/** Group is required but may be "" (the core group). */
function group(f: FieldReader, value: unknown, path: string): string {
  const g = f.string(value, path);
  if (g === undefined) f.fail(path, 'required ("" for the core group)');
  if (g.length > 253 || !GROUP.test(g)) f.fail(path, `not a valid API group: ${JSON.stringify(g)}`);
  return g;
}

function kind(f: FieldReader, value: unknown, path: string): string {
  const k = f.requiredString(value, path);
  if (k.length > 63 || !KIND.test(k)) f.fail(path, `not a valid kind: ${JSON.stringify(k)}`);
  return k;
}

/** Whether one of `grants` lets `routeKind`s of `fromNamespace` send to Service `toNamespace/toName`. */
export function grantsRouteToService(grants: Iterable<MeshReferenceGrant>, routeKind: string, fromNamespace: string, toNamespace: string, toName: string): boolean {
  for (const g of grants) {
    if (g.namespace !== toNamespace) continue;
    if (!g.from.some((x) => x.group === GATEWAY_GROUP && x.kind === routeKind && x.namespace === fromNamespace)) continue;
    if (g.to.some((x) => (x.group === '' || x.group === 'core') && x.kind === 'Service' && (x.name === '' || x.name === toName))) return true;
  }
  return false;
}
