// AuthorizationPolicy evaluation with Istio semantics: DENY policies first (any
// match denies); then, when any ALLOW policy applies to the workload, the
// connection must match one of them. Pure: callers pass the policies that apply
// to the destination (ConfigStore.policiesFor).

import { BlockList, isIP } from 'node:net';
import type { AuthorizationPolicy, PolicyOperation, PolicyRule, PolicySource, Workload } from '../core/types.ts';
import { principalOf } from '../core/identity.ts';

export interface AuthorizationInput {
  /** SPIFFE ID of the peer, or null for plaintext. */
  sourcePrincipal: string | null;
  sourceNamespace: string | null;
  sourceIp: string;
  destination: Workload;
  port: number;
  /** Present only when the connection is evaluated at L7. */
  http?: { method: string; path: string };
}

export interface Decision {
  allowed: boolean;
  /** namespace/name of the policy that decided, when one did. */
  policy?: string;
  /** Refused because the destination requires mTLS and the source sent plaintext. */
  strictMtls?: boolean;
  reason: string;
}

export function authorize(conn: AuthorizationInput, policies: readonly AuthorizationPolicy[]): Decision {
  for (const p of policies) {
    if (p.action === 'DENY' && p.rules.some((r) => ruleMatches(r, conn, 'DENY'))) {
      return { allowed: false, policy: policyName(p), reason: `denied by DENY policy ${policyName(p)}` };
    }
  }
  const allows = policies.filter((p) => p.action === 'ALLOW');
  if (allows.length === 0) return { allowed: true, reason: 'no ALLOW policy applies to the workload' };
  for (const p of allows) {
    if (p.rules.some((r) => ruleMatches(r, conn, 'ALLOW'))) {
      return { allowed: true, policy: policyName(p), reason: `allowed by ALLOW policy ${policyName(p)}` };
    }
  }
  return {
    allowed: false,
    reason: `no rule of the ALLOW policies that apply (${allows.map(policyName).join(', ')}) matches`,
  };
}

function policyName(p: AuthorizationPolicy): string {
  return `${p.namespace}/${p.name}`;
}

function ruleMatches(rule: PolicyRule, conn: AuthorizationInput, action: 'ALLOW' | 'DENY'): boolean {
  const fromOk = rule.from.length === 0 || rule.from.some((s) => sourceMatches(s, conn));
  const toOk = rule.to.length === 0 || rule.to.some((o) => operationMatches(o, conn, action));
  return fromOk && toOk;
}

function sourceMatches(s: PolicySource, conn: AuthorizationInput): boolean {
  // Plaintext peers have no principal or namespace: a positive list never matches
  // them and a negative list always does (so DENY notPrincipals ["*"] denies plaintext).
  const principal = conn.sourcePrincipal === null ? null : principalOf(conn.sourcePrincipal);
  return (
    positive(s.principals, principal, (pattern, v) => wildcardMatch(principalOf(pattern), v)) &&
    negative(s.notPrincipals, principal, (pattern, v) => wildcardMatch(principalOf(pattern), v)) &&
    positive(s.namespaces, conn.sourceNamespace, wildcardMatch) &&
    negative(s.notNamespaces, conn.sourceNamespace, wildcardMatch) &&
    positive(s.ipBlocks, conn.sourceIp, cidrMatch) &&
    negative(s.notIpBlocks, conn.sourceIp, cidrMatch)
  );
}

function operationMatches(o: PolicyOperation, conn: AuthorizationInput, action: 'ALLOW' | 'DENY'): boolean {
  const portOk = positive(o.ports, conn.port, (p, v) => p === v) && negative(o.notPorts, conn.port, (p, v) => p === v);
  if (!portOk) return false;
  const usesHttp = o.methods.length + o.notMethods.length + o.paths.length + o.notPaths.length > 0;
  if (!usesHttp) return true;
  // At L4 the HTTP fields cannot be checked: ALLOW must not grant on them, DENY
  // errs on the safe side and denies (as Istio's ztunnel does).
  if (!conn.http) return action === 'DENY';
  const { method, path } = conn.http;
  return (
    positive(o.methods, method, (p, v) => p === '*' || p === v) &&
    negative(o.notMethods, method, (p, v) => p === '*' || p === v) &&
    positive(o.paths, path, wildcardMatch) &&
    negative(o.notPaths, path, wildcardMatch)
  );
}

/** Empty list: no constraint. Otherwise the value must be present and match one entry. */
function positive<P, V>(list: readonly P[], value: V | null, match: (pattern: P, value: V) => boolean): boolean {
  if (list.length === 0) return true;
  return value !== null && list.some((p) => match(p, value));
}

/** Empty list: no constraint. Otherwise an absent value passes; a present one must match none. */
function negative<P, V>(list: readonly P[], value: V | null, match: (pattern: P, value: V) => boolean): boolean {
  if (list.length === 0 || value === null) return true;
  return !list.some((p) => match(p, value));
}

/** Istio string match: exact, "*" (any non-empty), "prefix*" or "*suffix". */
export function wildcardMatch(pattern: string, value: string): boolean {
  if (pattern === '*') return value.length > 0;
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  return pattern === value;
}

const blockLists = new Map<string, BlockList | null>();

/** "10.0.0.0/8", "10.1.2.3" or IPv6 forms; an unparsable block matches nothing. */
export function cidrMatch(block: string, ip: string): boolean {
  let list = blockLists.get(block);
  if (list === undefined) {
    list = parseBlock(block);
    blockLists.set(block, list);
  }
  const addr = unmapIpv4(ip);
  const family = isIP(addr);
  if (!list || family === 0) return false;
  return list.check(addr, family === 6 ? 'ipv6' : 'ipv4');
}

function parseBlock(block: string): BlockList | null {
  const [addr, bits] = block.split('/', 2) as [string, string | undefined];
  const family = isIP(addr);
  if (family === 0) return null;
  const type = family === 6 ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  if (bits === undefined) {
    list.addAddress(addr, type);
    return list;
  }
  const prefix = Number(bits);
  if (!/^\d+$/.test(bits) || prefix > (family === 6 ? 128 : 32)) return null;
  list.addSubnet(addr, prefix, type);
  return list;
}

/** "::ffff:10.0.0.1" (an IPv4 peer on a dual-stack socket) -> "10.0.0.1". */
export function unmapIpv4(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}
