// SPIFFE identities: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.

import { ErrorCode, NodemeshError } from './errors.ts';

export interface Identity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export function formatIdentity(id: Identity): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function identityOf(trustDomain: string, namespace: string, serviceAccount: string): string {
  return formatIdentity({ trustDomain, namespace, serviceAccount });
}

const SPIFFE = /^spiffe:\/\/([a-z0-9.\-_]+)\/ns\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/sa\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/;

export function parseIdentity(uri: string): Identity {
  const m = SPIFFE.exec(uri);
  if (!m) throw new NodemeshError(ErrorCode.BAD_IDENTITY, `not a workload SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>): ${JSON.stringify(uri)}`);
  return { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[4]! };
}

/** Istio-style principal ("cluster.local/ns/x/sa/y") of a SPIFFE ID. */
export function principalOf(uri: string): string {
  return uri.startsWith('spiffe://') ? uri.slice('spiffe://'.length) : uri;
}

/**
 * The URI names of the subjectAltName text that node:crypto and node:tls give
 * ("URI:a, DNS:b"). Node writes a value that holds a comma or quote as a JSON
 * string, so a name cannot pose as two.
 */
export function uriSans(subjectAltName: string | undefined): string[] {
  const uris: string[] = [];
  for (const m of (subjectAltName ?? '').matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    if (m[1] === 'URI') uris.push(m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!);
  }
  return uris;
}
