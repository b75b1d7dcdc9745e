// The data plane's live event stream behind the admin API's `/tap`: a connection
// opening and closing (connection-tracker.ts), every refusal with its reason
// (admission.ts, the one place refusals are decided), and every HTTP or gRPC
// request either side of the mesh proxies (l7/request-metrics.ts). Each event is
// built only while someone listens, so an untapped node pays one size check per
// record point. A subscriber names the events it wants and a namespace or
// workload, and the node filters: a tap on a busy node sends only what was
// asked for. Identities are SPIFFE IDs, as in every other answer.

import { ErrorCode, NodemeshError } from '../core/errors.ts';
import type { Workload, Service } from '../core/types.ts';

export const TAP_EVENTS = ['open', 'close', 'refusal', 'request'] as const;
export type TapEventKind = (typeof TAP_EVENTS)[number];

/** One end of a tapped connection or request. */
export interface TapEnd {
  ip: string;
  port?: number;
  /** "<namespace>/<pod>", null outside the mesh's config. */
  workload: string | null;
  /** SPIFFE ID; null for a plaintext source. */
  identity: string | null;
  service?: string | null;
}

/** One line of `/tap`. */
export type TapEvent = { event: TapEventKind; source?: TapEnd; destination?: TapEnd } & Record<string, unknown>;
export type TapListener = (event: TapEvent) => void;

export interface TapFilter {
  /** The kinds wanted; all when absent. */
  events?: ReadonlySet<TapEventKind>;
  /** Either end's workload is in this namespace. */
  namespace?: string;
  /** Either end's workload (pod) has this name. */
  workload?: string;
}

export class TapFilterError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.BAD_TAP_FILTER, message);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const FILTER_PARAMS = new Set(['event', 'namespace', 'workload']);

/** The filter of `/tap?event=request,refusal&namespace=demo&workload=server-a`; a bad or unknown parameter throws. */
export function parseTapFilter(params: URLSearchParams): TapFilter {
  const filter: TapFilter = {};
  for (const name of new Set(params.keys())) {
    if (!FILTER_PARAMS.has(name)) throw new TapFilterError(`tap: unknown parameter ${JSON.stringify(name)}; the filters are event, namespace, workload`);
    if (params.getAll(name).length > 1) throw new TapFilterError(`tap: ${name} given more than once`);
  }
  const events = params.get('event');
  if (events !== null) {
    const kinds = events.split(',');
    const unknown = kinds.filter((k) => !(TAP_EVENTS as readonly string[]).includes(k));
    if (unknown.length > 0) throw new TapFilterError(`tap: event: ${unknown.map((k) => JSON.stringify(k)).join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not one of ${TAP_EVENTS.join(', ')}`);
    filter.events = new Set(kinds as TapEventKind[]);
  }
  const namespace = params.get('namespace');
  if (namespace !== null) {
    if (!DNS_LABEL.test(namespace)) throw new TapFilterError(`tap: namespace: ${JSON.stringify(namespace.slice(0, 80))} is not a namespace name (a DNS label)`);
    filter.namespace = namespace;
  }
  const workload = params.get('workload');
  if (workload !== null) {
    if (!DNS_SUBDOMAIN.test(workload)) throw new TapFilterError(`tap: workload: ${JSON.stringify(workload.slice(0, 80))} is not a pod name`);
    filter.workload = workload;
  }
  return filter;
}

export function tapMatches(filter: TapFilter, event: TapEvent): boolean {
  if (filter.events && !filter.events.has(event.event)) return false;
  const ends = [event.source?.workload, event.destination?.workload].filter((w): w is string => typeof w === 'string');
  if (filter.namespace !== undefined && !ends.some((w) => w.slice(0, w.indexOf('/')) === filter.namespace)) return false;
  if (filter.workload !== undefined && !ends.some((w) => w.slice(w.indexOf('/') + 1) === filter.workload)) return false;
  return true;
}

const wantsRequests = (filter: TapFilter) => !filter.events || filter.events.has('request');

export class Tap {
  readonly #listeners = new Map<TapListener, TapFilter>();
  readonly #onRequestsWanted = new Set<() => void>();

  /** True while someone listens: record points build events only then. */
  get active(): boolean {
    return this.#listeners.size > 0;
  }

  /** True while someone listens for `request` events (a node has few taps, mostly none). */
  get wantsRequests(): boolean {
    for (const filter of this.#listeners.values()) if (wantsRequests(filter)) return true;
    return false;
  }

  /** Streams the events `filter` lets through to `listener` until the returned function is called. */
  subscribe(listener: TapListener, filter: TapFilter = {}): () => void {
    const wanted = this.wantsRequests;
    // One listener subscribed twice keeps two entries' worth of intent: wrap it.
    const own: TapListener = (e) => listener(e);
    this.#listeners.set(own, filter);
    if (!wanted && wantsRequests(filter)) for (const fn of this.#onRequestsWanted) fn();
    return () => this.#listeners.delete(own);
  }

  /** Calls `fn` each time request events become wanted (the first such listener), until the returned function is called. */
  onRequestsWanted(fn: () => void): () => void {
    this.#onRequestsWanted.add(fn);
    return () => this.#onRequestsWanted.delete(fn);
  }

  /** Sends `event` (stamped with the time) to every listener whose filter matches. */
  publish(event: TapEvent): void {
    if (this.#listeners.size === 0) return;
    const stamped: TapEvent = { time: new Date().toISOString(), ...event };
    for (const [listener, filter] of this.#listeners) if (tapMatches(filter, stamped)) listener(stamped);
  }
}

/** How a tap event names a workload. */
export function workloadRef(w: Workload | undefined): string | null {
  return w ? `${w.namespace}/${w.name}` : null;
}

export function serviceRef(s: Service | undefined): string | null {
  return s ? `${s.namespace}/${s.name}` : null;
}
