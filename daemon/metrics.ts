// Prometheus metrics of the data plane, with labels modelled on Istio's standard
// metrics. TCP byte counters are updated once, at close, from the socket's own
// byte counts, so the hot path carries no per-chunk accounting. Every label set
// is indexed by the workloads it names (`SeriesIndex`), so the series of a
// workload that left are dropped once nothing uses them: otherwise each pod that
// ever ran adds series for as long as the node runs (40 identities cycled through
// one pod IP took a node from 6 to 167 series).

import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { Service, Workload } from '../core/types.ts';

export const TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_service',
  'connection_security_policy',
] as const;

export type TcpLabel = (typeof TCP_LABELS)[number];
export type TcpLabels = Record<TcpLabel, string>;

/** The two ends of a connection or request, as both kinds of metrics label them. */
export interface PeerReport {
  reporter: 'source' | 'destination';
  sourceWorkload?: Workload;
  sourcePrincipal: string | null;
  destinationWorkload?: Workload;
  destinationPrincipal: string | null;
  service?: Service;
  security: 'mutual_tls' | 'none';
}

/** Istio's standard labels of a connection or request; "unknown" where an end is not in the mesh. */
export function peerLabels(r: PeerReport): TcpLabels {
  return {
    reporter: r.reporter,
    source_workload: r.sourceWorkload?.workloadName ?? 'unknown',
    source_workload_namespace: r.sourceWorkload?.namespace ?? 'unknown',
    source_principal: r.sourcePrincipal ?? 'unknown',
    destination_workload: r.destinationWorkload?.workloadName ?? 'unknown',
    destination_workload_namespace: r.destinationWorkload?.namespace ?? 'unknown',
    destination_principal: r.destinationPrincipal ?? 'unknown',
    // Istio reports the Service's cluster-local host name.
    destination_service: r.service ? `${r.service.name}.${r.service.namespace}.svc.cluster.local` : 'unknown',
    connection_security_policy: r.security,
  };
}

export const REQUEST_LABELS = [...TCP_LABELS, 'response_code'] as const;
export type RequestLabel = (typeof REQUEST_LABELS)[number];

const DENIED_LABELS = ['reporter', 'destination_workload', 'destination_workload_namespace', 'source_principal', 'reason'] as const;
export type DeniedLabel = (typeof DENIED_LABELS)[number];

/**
 * Why the destination refused or closed a connection (the `reason` label):
 * authorization policy, strict mTLS, a policy change closing an open one; at
 * 15008 also a Forwarded header not bound to the peer's identity, a peer over
 * its open-stream limit, and a handshake not finished within its deadline.
 */
export type DeniedReason = 'policy' | 'strict_mtls' | 'policy_changed' | 'forwarded_mismatch' | 'source_limit' | 'handshake_timeout';

export interface DaemonMetrics {
  tcpOpened: Counter<TcpLabel>;
  tcpClosed: Counter<TcpLabel>;
  /** Bytes sent to the source: the response direction, as in Istio. */
  tcpSent: Counter<TcpLabel>;
  /** Bytes received from the source: the request direction. */
  tcpReceived: Counter<TcpLabel>;
  /** Connections refused or closed by the destination; `reason` is a DeniedReason. */
  tcpDenied: Counter<DeniedLabel>;
  requests: Counter<RequestLabel>;
  requestDuration: Histogram<RequestLabel>;
  /** The label sets above by the workloads they name, to drop those of departed workloads. */
  series: SeriesIndex;
}

type IndexedMetric = Counter<string> | Histogram<string>;
type Labels = Record<string, string | number>;

/** How long the series of a workload that left the config are kept (scrapes see its last counts). */
export const SERIES_GRACE_MS = 5 * 60_000;
/** Label sets indexed per workload end; past it that end's series are found by scanning the metrics. */
const MAX_SERIES_PER_END = 4096;

/**
 * The ends a label set names: `w:<namespace>/<workload>/<principal>` for a
 * workload (principal "*" where the metric has none), `p:<principal>` for a
 * principal alone. "unknown" ends (outside the mesh) name nobody.
 */
export function endsOf(labels: Labels): string[] {
  const ends: string[] = [];
  const end = (workload: unknown, namespace: unknown, principal: unknown) => {
    if (workload !== undefined && workload !== 'unknown') ends.push(`w:${namespace}/${workload}/${principal ?? '*'}`);
    else if (principal !== undefined && principal !== 'unknown') ends.push(`p:${principal}`);
  };
  end(labels.source_workload, labels.source_workload_namespace, labels.source_principal);
  end(labels.destination_workload, labels.destination_workload_namespace, labels.destination_principal);
  return ends;
}

/** The ends the current config names: what `endsOf` would give for each of its workloads. */
export function liveEnds(workloads: readonly Workload[], identityOf: (w: Workload) => string): Set<string> {
  const live = new Set<string>();
  for (const w of workloads) {
    const id = identityOf(w);
    const base = `w:${w.namespace}/${w.workloadName}/`;
    live.add(`${base}${id}`).add(`${base}unknown`).add(`${base}*`).add(`p:${id}`);
  }
  return live;
}

/**
 * Every label set of the peer metrics, by the ends it names, bounded per end.
 * `sweep` drops the label sets of ends that have been out of the config for the
 * grace period and that no open connection uses.
 */
export class SeriesIndex {
  readonly graceMs: number;
  /** end -> (metric name + labels' hash) -> the series. */
  readonly #byEnd = new Map<string, Map<string, { metric: IndexedMetric; labels: Labels }>>();
  /** Ends whose label sets outgrew the index: found by scanning the metrics. */
  readonly #overflowed = new Set<string>();
  readonly #departedSince = new Map<string, number>();
  /**
   * Per metric: every series noted and not dropped, by prom-client's hash of its
   * labels (mapped to itself: the one copy of the string every label set object of
   * the series shares; an increment of a known one costs one lookup), and the
   * hash of each label set object seen.
   */
  readonly #series = new Map<IndexedMetric, { known: Map<string, string>; hashes: WeakMap<Labels, string> }>();

  constructor(graceMs = SERIES_GRACE_MS) {
    this.graceMs = graceMs;
  }

  /**
   * What indexes `metric` with a label set and returns prom-client's hash of
   * it: called on every increment (`indexed`), so it allocates only for a new
   * label set object, and keeps nothing per label set object but the shared
   * hash: each open connection holds a label set of its own, and a key string
   * per label set was 0.4 KiB of each held connection's heap on each node.
   */
  noter(metric: IndexedMetric): (labels: Labels) => string {
    let series = this.#series.get(metric);
    if (!series) this.#series.set(metric, (series = { known: new Map(), hashes: new WeakMap() }));
    const { known, hashes } = series;
    return (labels) => this.#note(metric, known, hashes, labels);
  }

  #note(metric: IndexedMetric, known: Map<string, string>, hashes: WeakMap<Labels, string>, labels: Labels): string {
    let hash = hashes.get(labels);
    if (hash === undefined) {
      const built = seriesHash(metric, labels);
      hash = known.get(built) ?? built;
      hashes.set(labels, hash);
    }
    if (known.has(hash)) return hash;
    known.set(hash, hash);
    const key = seriesKey(metric, hash);
    for (const end of endsOf(labels)) {
      let sets = this.#byEnd.get(end);
      if (!sets) this.#byEnd.set(end, (sets = new Map()));
      if (sets.has(key)) continue;
      if (sets.size >= MAX_SERIES_PER_END) {
        this.#overflowed.add(end);
        continue;
      }
      sets.set(key, { metric, labels: { ...labels } });
    }
    return hash;
  }

  /** Label sets indexed (a label set naming two ends counts twice). */
  get size(): number {
    let n = 0;
    for (const sets of this.#byEnd.values()) n += sets.size;
    return n;
  }

  /**
   * Drops the series of ends not in `live` for `graceMs` (counted from the first
   * sweep that saw them gone) and not in `inUse`. Returns how many label sets went.
   */
  async sweep(live: ReadonlySet<string>, inUse: ReadonlySet<string>, now = Date.now()): Promise<number> {
    let dropped = 0;
    for (const end of new Set([...this.#byEnd.keys(), ...this.#overflowed])) {
      if (live.has(end)) {
        this.#departedSince.delete(end);
        continue;
      }
      const since = this.#departedSince.get(end) ?? now;
      this.#departedSince.set(end, since);
      if (now - since < this.graceMs || inUse.has(end)) continue;
      for (const { metric, labels } of this.#byEnd.get(end)?.values() ?? []) {
        dropped += this.#drop(metric, labels);
      }
      if (this.#overflowed.has(end)) {
        for (const metric of this.#series.keys()) {
          for (const labels of await labelSetsOf(metric)) if (endsOf(labels).includes(end)) dropped += this.#drop(metric, labels);
        }
        this.#overflowed.delete(end);
      }
      this.#byEnd.delete(end);
      this.#departedSince.delete(end);
    }
    return dropped;
  }

  #drop(metric: IndexedMetric, labels: Labels): number {
    metric.remove(labels);
    const hash = seriesHash(metric, labels);
    this.#series.get(metric)?.known.delete(hash);
    const key = seriesKey(metric, hash);
    // The label set is indexed under its other end too.
    for (const other of endsOf(labels)) {
      const sets = this.#byEnd.get(other);
      sets?.delete(key);
      if (sets?.size === 0 && !this.#overflowed.has(other)) this.#byEnd.delete(other);
    }
    return 1;
  }
}

/** A series' key in the index by end: its metric and its labels' hash. */
function seriesKey(metric: IndexedMetric, hash: string): string {
  return `${internals(metric).name}\0${hash}`;
}

/**
 * What prom-client 15 keeps a metric's series under (its hashObject): each
 * label, in sorted order, as `name:value,`. See `indexed`.
 */
function seriesHash(metric: IndexedMetric, labels: Labels): string {
  let hash = '';
  for (const name of internals(metric).sortedLabelNames) {
    const value = labels[name];
    if (value !== undefined) hash += `${name}:${value},`;
  }
  return hash;
}

/** The parts of prom-client 15's metrics that `indexed` updates in place (metrics.test.ts checks them). */
interface PromInternals {
  name: string;
  sortedLabelNames: readonly string[];
  hashMap: Record<string, { value: number; sum: number; count: number; bucketValues: Record<number, number> } | undefined>;
  upperBounds: readonly number[];
}

function internals(metric: IndexedMetric): PromInternals {
  return metric as unknown as PromInternals;
}

/** A metric's label sets as it exports them, without a histogram's `le`. */
async function labelSetsOf(metric: IndexedMetric): Promise<Labels[]> {
  const seen = new Map<string, Labels>();
  for (const v of (await metric.get()).values) {
    const { le: _le, ...labels } = v.labels as Labels;
    seen.set(JSON.stringify(labels), labels);
  }
  return [...seen.values()];
}

const INDEXED = Symbol('nodemesh.indexed');

/**
 * Makes every `inc`/`observe` with labels also note them in `series`; once per
 * metric. An increment of a series that exists updates it in place, found by
 * the hash the series index keeps per label set object: prom-client hashes every
 * label value on each call, and for a request's ten labels that was 2.6 KiB
 * per request, 8% of what an HTTP request allocated through both nodes
 * (l7-inprocess.ts). A new series, or a value prom-client would reject,
 * goes through prom-client, which validates and creates it.
 */
function indexed<M extends IndexedMetric>(metric: M, series: SeriesIndex): M {
  const m = metric as M & { [INDEXED]?: true };
  if (m[INDEXED]) return metric;
  m[INDEXED] = true;
  const state = internals(metric);
  const note = series.noter(metric);
  if (metric instanceof Histogram) {
    const observe = metric.observe.bind(metric) as (labels: Labels, value: number) => void;
    (metric as Histogram<string>).observe = ((labels: Labels, value: number) => {
      const s = state.hashMap[note(labels)];
      if (!s || !Number.isFinite(value)) return observe(labels, value);
      s.sum += value;
      s.count += 1;
      const bound = bucketOf(state.upperBounds, value);
      if (Object.hasOwn(s.bucketValues, bound)) s.bucketValues[bound]! += 1;
    }) as Histogram<string>['observe'];
  } else {
    const inc = metric.inc.bind(metric) as (labels: Labels, value?: number) => void;
    (metric as Counter<string>).inc = ((labels: Labels, value: number = 1) => {
      const s = state.hashMap[note(labels)];
      if (!s || !Number.isFinite(value) || value < 0) return inc(labels, value);
      s.value += value;
    }) as Counter<string>['inc'];
  }
  return metric;
}

/** The bucket prom-client counts `value` in: the first upper bound at or above it, -1 past the last. */
function bucketOf(upperBounds: readonly number[], value: number): number {
  for (const bound of upperBounds) if (value <= bound) return bound;
  return -1;
}

/** One index per registry: several data-plane parts register on the same one. */
const indexes = new WeakMap<Registry, SeriesIndex>();

/**
 * Registers the data-plane metrics on `registry`, reusing ones already
 * registered there. `seriesGraceMs` (first call per registry only): how long the
 * series of a departed workload stay (default 5 min).
 */
export function createMetrics(registry: Registry, opts: { seriesGraceMs?: number } = {}): DaemonMetrics {
  let series = indexes.get(registry);
  if (!series) indexes.set(registry, (series = new SeriesIndex(opts.seriesGraceMs)));
  const index = series;
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
    indexed((registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] }), index);
  return {
    series,
    tcpOpened: counter('nodemesh_tcp_connections_opened_total', 'TCP connections opened through the mesh.', TCP_LABELS),
    tcpClosed: counter('nodemesh_tcp_connections_closed_total', 'TCP connections closed.', TCP_LABELS),
    tcpSent: counter('nodemesh_tcp_sent_bytes_total', 'Bytes sent back to the source of TCP connections (response direction).', TCP_LABELS),
    tcpReceived: counter('nodemesh_tcp_received_bytes_total', 'Bytes received from the source of TCP connections (request direction).', TCP_LABELS),
    tcpDenied: counter('nodemesh_tcp_connections_denied_total', 'TCP connections refused or closed by the destination: authorization policy, strict mTLS, or the HBONE port\'s limits (reason label).', DENIED_LABELS),
    requests: counter('nodemesh_requests_total', 'HTTP requests through the mesh.', REQUEST_LABELS),
    requestDuration: indexed(
      (registry.getSingleMetric('nodemesh_request_duration_seconds') as Histogram<RequestLabel> | undefined) ??
      new Histogram({
        name: 'nodemesh_request_duration_seconds',
        help: 'HTTP request duration, from the request to the end of the response.',
        labelNames: REQUEST_LABELS,
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers: [registry],
      }), index),
  };
}
