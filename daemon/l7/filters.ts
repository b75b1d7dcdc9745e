// The Gateway API filters of a matched rule: RequestHeaderModifier,
// ResponseHeaderModifier, URLRewrite and RequestRedirect, as pure functions over
// header maps and paths, and the loop that applies a rule's filters to a request
// in their order.

import type { HeaderModifier, HttpRouteFilter, HttpRouteMatch } from '../../core/types.ts';
import { normalizePrefix } from './route-table.ts';
import { LocalReply } from './local-reply.ts';

export type Headers = Record<string, string | string[] | undefined>;

/** What a request needs to be read and rewritten: node:http and node:http2 requests both fit. */
export interface RoutableRequest {
  url?: string;
  method?: string;
  headers: Headers;
}

/**
 * Applies a matched rule's filters to the request (its headers and URL change in
 * place). A RequestRedirect ends the request with a LocalReply; otherwise the
 * response header modifier, if any, is returned for the response.
 */
export function applyRequestFilters(
  filters: readonly HttpRouteFilter[], req: RoutableRequest, url: URL, match: HttpRouteMatch, dialled: { ip: string; port: number },
): LocalReply | { responseHeaders?: HeaderModifier } {
  let responseHeaders: HeaderModifier | undefined;
  for (const filter of filters) {
    switch (filter.type) {
      case 'RequestRedirect': {
        const host = authorityOf(req) ?? dialled.ip;
        const location = redirectLocation(filter, { scheme: 'http', host, port: dialled.port, path: url.pathname, search: url.search }, match);
        return new LocalReply(filter.statusCode || 302, '', { location });
      }
      case 'RequestHeaderModifier':
        if (filter.headerModifier) modifyHeaders(req.headers, filter.headerModifier);
        break;
      case 'ResponseHeaderModifier':
        responseHeaders = filter.headerModifier;
        break;
      case 'URLRewrite':
        if (filter.hostname) req.headers[':authority' in req.headers ? ':authority' : 'host'] = filter.hostname;
        if (filter.path) req.url = rewritePath(url.pathname, filter.path, match) + url.search;
        break;
    }
  }
  return { responseHeaders };
}

/** Host of the request: HTTP/2's :authority or HTTP/1's Host. */
function authorityOf(req: RoutableRequest): string | undefined {
  const value = req.headers[':authority'] ?? req.headers.host;
  return Array.isArray(value) ? value[0] : value;
}

/** A list-valued header (x-forwarded-for and its kin) with `value` appended to what the request carried. */
export function appendToList(prior: string | string[] | undefined, value: string): string {
  return prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${value}` : value;
}

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
