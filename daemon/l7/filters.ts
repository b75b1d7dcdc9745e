// The Gateway API filters of a matched rule, as pure functions over header maps
// and paths: RequestHeaderModifier, ResponseHeaderModifier, URLRewrite and
// RequestRedirect.

import type { HeaderModifier, HttpRouteFilter, HttpRouteMatch } from '../../core/types.ts';
import { normalizePrefix } from './route-table.ts';

export type Headers = Record<string, string | string[] | undefined>;

/** set replaces, add appends (comma-joined, as the spec shows), remove deletes; names case-insensitive. */
export function modifyHeaders(headers: Headers, mod: HeaderModifier): void {
  for (const { name, value } of mod.set) headers[name.toLowerCase()] = value;
  for (const { name, value } of mod.add) {
    const key = name.toLowerCase();
    const current = headers[key];
    headers[key] = current === undefined ? value : `${Array.isArray(current) ? current.join(',') : current},${value}`;
  }
  for (const name of mod.remove) delete headers[name.toLowerCase()];
}

/**
 * The path after a path modifier: ReplaceFullPath replaces it; ReplacePrefixMatch
 * replaces the part the PathPrefix match consumed, keeping "/" boundaries.
 */
export function rewritePath(path: string, modifier: NonNullable<HttpRouteFilter['path']>, match: HttpRouteMatch): string {
  if (modifier.type === 'ReplaceFullPath') return modifier.value;
  const prefix = match.path?.type === 'PathPrefix' ? normalizePrefix(match.path.value) : '/';
  const rest = prefix === '/' ? path.slice(1) : path.slice(prefix.length).replace(/^\//, '');
  const replacement = normalizePrefix(modifier.value);
  if (!rest) return modifier.value;
  return replacement === '/' ? `/${rest}` : `${replacement}/${rest}`;
}

export interface RedirectInput {
  /** "http" for everything the mesh captures. */
  scheme: string;
  /** The request's Host header (may carry a port). */
  host: string;
  /** The port the client dialled, used when Host carries none. */
  port: number;
  path: string;
  /** "?..." or "". */
  search: string;
}

const DEFAULT_PORTS: Record<string, number> = { http: 80, https: 443 };

/** The Location of a RequestRedirect, following the spec's port rules. */
export function redirectLocation(filter: HttpRouteFilter, req: RedirectInput, match: HttpRouteMatch): string {
  const { hostname: requestHost, port: requestPort } = splitHost(req.host, req.port);
  const scheme = filter.scheme || req.scheme;
  const hostname = filter.hostname || requestHost;
  // Spec: an explicit port wins; else a scheme change means that scheme's well-known
  // port; else the request's port. Well-known ports are left out of Location.
  const port = filter.port || (filter.scheme ? DEFAULT_PORTS[scheme] ?? requestPort : requestPort);
  const path = filter.path ? rewritePath(req.path, filter.path, match) : req.path;
  const authority = port === DEFAULT_PORTS[scheme] ? hostname : `${hostname}:${port}`;
  return `${scheme}://${authority}${path}${req.search}`;
}

function splitHost(host: string, fallbackPort: number): { hostname: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(host);
  if (!m) return { hostname: host, port: fallbackPort };
  return { hostname: m[1]!, port: m[2] ? Number(m[2]) : fallbackPort };
}
