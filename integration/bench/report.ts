// The shape of a results file and its rendering as Markdown: one row per path
// with each metric's ratio to `direct` and to the path's nginx reference
// (`nginx-l7-mtls` for the HTTP paths, `nginx-mtls` for the others), the targets
// checked, and the commands and pinning that produced them.

import type { PathName } from './bench-topology.ts';
import { PATHS, referenceOf } from './bench-topology.ts';
import type { Durations } from './path-bench.ts';
import type { ScaleResult } from './scale.ts';
import type { TunnelMemory } from './tunnel-memory.ts';
import type { FairnessResult } from './fairness.ts';
import { round } from './stats.ts';
import type { WorkersResult } from './workers.ts';
import { WORKERS_RUN_NAMES, WORKERS_TARGET } from './workers.ts';

export interface PathResult {
  rps: number | null;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  conn_per_s: number | null;
  bulk_gbps: number | null;
  cpu_s_per_1k_req: number | null;
  rss_mib: number | null;
}

export interface BenchResults {
  date: string;
  cores: number;
  commit: string;
  pinning: { load_generators: string; nodes: string };
  mode: 'quick' | 'full';
  rounds: number;
  durations_s: Durations;
  paths: Record<PathName, PathResult | null>;
  /** Each mesh path's metrics over its nginx reference's (`against`); absent in results written before it existed. */
  ratios?: Partial<Record<MeshPath, PathRatios>>;
  /** Why a path or a metric is null. */
  notes: Partial<Record<PathName, string>>;
  commands: Partial<Record<PathName, Record<string, string[]>>>;
  tunnel_memory: TunnelMemory | null;
  scale: ScaleResult | null;
  /** A quiet pod's latency alone and beside a flooding pod on its node; absent in results written before it existed. */
  fairness?: FairnessResult | null;
  /** nodemesh req/s with one and two data-plane workers on both CPUs; absent in results written before it existed. */
  workers?: WorkersResult | null;
  /** Failed requests or connections over all measured rounds. */
  errors: number;
  duration_s?: number;
}

const METRICS: { key: keyof PathResult; label: string; higherIsBetter: boolean }[] = [
  { key: 'rps', label: 'req/s (32 conns)', higherIsBetter: true },
  { key: 'p50_ms', label: 'p50 ms @1k/s', higherIsBetter: false },
  { key: 'p90_ms', label: 'p90 ms @1k/s', higherIsBetter: false },
  { key: 'p99_ms', label: 'p99 ms @1k/s', higherIsBetter: false },
  { key: 'conn_per_s', label: 'new conn/s', higherIsBetter: true },
  { key: 'bulk_gbps', label: 'bulk Gb/s', higherIsBetter: true },
  { key: 'cpu_s_per_1k_req', label: 'daemon CPU s / 1k req', higherIsBetter: false },
  { key: 'rss_mib', label: 'daemon RSS MiB', higherIsBetter: false },
];

const MESH_PATHS = ['nodemesh-l4', 'nodemesh-l7'] as const satisfies readonly PathName[];
type MeshPath = (typeof MESH_PATHS)[number];

export type PathRatios = { against: PathName } & Record<keyof PathResult, number | null>;

/** Every metric of each mesh path over its reference's, rounded; null where either is missing. */
export function meshRatios(paths: BenchResults['paths']): Partial<Record<MeshPath, PathRatios>> {
  const out: Partial<Record<MeshPath, PathRatios>> = {};
  for (const path of MESH_PATHS) {
    const p = paths[path];
    const against = referenceOf(path);
    const base = paths[against];
    if (!p || !base) continue;
    const values = Object.fromEntries(METRICS.map((m) => [m.key, round(ratioValue(p[m.key], base[m.key]))])) as Record<keyof PathResult, number | null>;
    out[path] = { against, ...values };
  }
  return out;
}

function shellWord(arg: string): string {
  return /[\s'"]/.test(arg) ? `'${arg.replace(/'/g, `'\\''`)}'` : arg;
}

function ratioValue(value: number | null | undefined, base: number | null | undefined): number | null {
  if (value == null || base == null || base === 0) return null;
  return value / base;
}

function ratio(value: number | null | undefined, base: number | null | undefined): string {
  const r = ratioValue(value, base);
  return r === null ? '–' : `${r.toFixed(2)}x`;
}

function cell(value: number | null | undefined): string {
  return value == null ? 'null' : String(value);
}

function targets(r: BenchResults): [string, string, boolean | null][] {
  const l4 = r.paths['nodemesh-l4'];
  const ng = r.paths['nginx-mtls'];
  const direct = r.paths.direct;
  const check = (ok: boolean | null, text: string, target: string): [string, string, boolean | null] => [target, text, ok];
  const has = (...v: (number | null | undefined)[]) => v.every((x) => x != null);
  const out: [string, string, boolean | null][] = [];
  if (l4 && ng && direct) {
    out.push(check(has(l4.rps, ng.rps) ? l4.rps! >= ng.rps! : null, ratio(l4.rps, ng.rps), 'rps >= 1.0x nginx-mtls'));
    out.push(check(has(l4.p99_ms, ng.p99_ms) ? l4.p99_ms! <= 1.5 * ng.p99_ms! : null, ratio(l4.p99_ms, ng.p99_ms), 'p99 @1k/s <= 1.5x nginx-mtls'));
    const added = has(l4.p50_ms, direct.p50_ms) ? l4.p50_ms! - direct.p50_ms! : null;
    out.push(check(added === null ? null : added <= 0.3, added === null ? '–' : `${added.toFixed(3)} ms`, 'added p50 over direct <= 0.3 ms'));
    out.push(check(has(l4.bulk_gbps, ng.bulk_gbps) ? l4.bulk_gbps! >= 0.8 * ng.bulk_gbps! : null, ratio(l4.bulk_gbps, ng.bulk_gbps), 'bulk >= 0.8x nginx-mtls'));
    out.push(check(has(l4.conn_per_s, ng.conn_per_s) ? l4.conn_per_s! >= ng.conn_per_s! : null, ratio(l4.conn_per_s, ng.conn_per_s), 'new conn/s >= 1.0x nginx-mtls'));
    out.push(check(l4.cpu_s_per_1k_req == null ? null : l4.cpu_s_per_1k_req <= 0.1, `${cell(l4.cpu_s_per_1k_req)} core·s per 1k req (both nodes)`, 'daemon CPU <= 0.1 core per 1,000 rps'));
  }
  if (r.tunnel_memory) {
    const worst = Math.max(...Object.values(r.tunnel_memory.nodes).map((n) => n.rss_mib));
    out.push(check(worst <= 80, `${worst.toFixed(1)} MiB (max over nodes, ${r.tunnel_memory.enrolled_pods} enrolled pods, ${r.tunnel_memory.connections} open tunnelled connections)`, 'RSS <= 80 MiB'));
  }
  if (r.fairness) {
    const f = r.fairness;
    out.push(check(f.p99_ratio <= 2, `${f.p99_ratio}x (${f.alone.p99_ms} -> ${f.under_flood.p99_ms} ms)`, 'fairness: quiet pod p99 beside a flood <= 2x alone'));
    out.push(check(f.refused_source_limit > 0, `${f.refused_source_limit} refused (source_limit) of ${f.flood.attempted} tried, cap ${f.flood.max_connections}`, 'fairness: the flood\'s excess connections refused'));
  }
  if (r.workers) {
    for (const path of WORKERS_RUN_NAMES) {
      const measured = r.workers.ratio?.[path] ?? null;
      const rps = (n: 1 | 2) => cell(r.workers!.settings?.[`workers_${n}`].paths[path]?.rps);
      const text = measured === null ? `not measured (${r.workers.notes.join('; ') || 'no numbers'})` : `${measured}x (${rps(1)} -> ${rps(2)} req/s)`;
      out.push(check(measured === null ? null : measured >= WORKERS_TARGET, text, `workers: ${path} req/s with --workers 2 >= ${WORKERS_TARGET}x --workers 1`));
    }
  }
  if (r.scale) {
    out.push(check(r.scale.first_sync_s <= 2, `${r.scale.first_sync_s} s`, 'scale: first sync <= 2 s'));
    out.push(check(r.scale.change_to_all_nodes_ms <= 100, `${r.scale.change_to_all_nodes_ms} ms`, 'scale: one change to all nodes <= 100 ms'));
    out.push(check(r.scale.node_config_mib <= 100, `${r.scale.node_config_mib} MiB (node RSS ${r.scale.node_rss_mib} MiB with the config, ${r.scale.node_empty_rss_mib} MiB with an empty mesh)`, 'scale: config memory <= 100 MiB at 10,000 pods'));
  }
  return out;
}

export function renderReport(r: BenchResults): string {
  const lines: string[] = [];
  lines.push(`### ${r.date} — commit ${r.commit}, ${r.cores} cores, ${r.mode} (${r.rounds} round(s), median)`, '');
  lines.push(`Pinning: load generators on ${r.pinning.load_generators}; ${r.pinning.nodes}.`, '');
  if (PATHS.some((p) => r.paths[p])) renderPaths(r, lines);
  for (const [path, note] of Object.entries(r.notes)) lines.push('', `${path}: ${note}`);
  const checks = targets(r);
  if (checks.length) {
    lines.push('', '| target | measured | met |', '|---|---|---|');
    for (const [target, text, ok] of checks) lines.push(`| ${target} | ${text} | ${ok === null ? 'n/a' : ok ? 'yes' : 'NO'} |`);
  }
  if (r.tunnel_memory) {
    const nodes = Object.entries(r.tunnel_memory.nodes).map(([n, m]) => `${n} ${m.idle_rss_mib.toFixed(1)} -> ${m.rss_mib.toFixed(1)} MiB (peak ${m.peak_rss_mib.toFixed(1)}; of which anonymous ${m.anon_mib.toFixed(1)}, file-backed ${m.file_mib.toFixed(1)})`);
    lines.push('', `Node RSS idle -> with ${r.tunnel_memory.connections} open tunnelled connections: ${nodes.join('; ')}.`);
  }
  if (r.workers?.settings) {
    const w = r.workers;
    const setting = (n: 1 | 2) => {
      const s = w.settings![`workers_${n}`];
      const rounds = (p: (typeof WORKERS_RUN_NAMES)[number]) => (s.paths[p]?.rps_rounds ?? []).join(' / ');
      const paths = WORKERS_RUN_NAMES.map((p) => `${p} ${cell(s.paths[p]?.rps)} req/s (rounds ${rounds(p) || 'none'}; ${cell(s.paths[p]?.cpu_s_per_1k_req)} CPU s / 1k req)`).join(', ');
      return `\`${s.node_args.join(' ')}\` ${paths}, ${s.inbound_listeners} listener(s) on n2's inbound port`;
    };
    lines.push('', `Workers (the nodemesh node processes on cpus ${w.node_cpus}, not pinned to one: the load generator on cpu 0 and the origin, control plane and nginx on cpu 1 share those cores with them; wrk as the req/s row, median of ${w.rounds} round(s)): ${setting(1)}; ${setting(2)}.`);
  }
  for (const note of r.workers?.notes ?? []) lines.push('', `workers: ${note}`);
  if (r.fairness) {
    const f = r.fairness;
    const l = (x: FairnessResult['alone']) => `p50 ${x.p50_ms} / p90 ${x.p90_ms} / p99 ${x.p99_ms} / max ${x.max_ms} ms (${x.completed} requests, ${x.errors} errors)`;
    const roundsText = ` Medians of ${f.rounds_p99_ms.alone.length} round(s) each side; p99 per round alone ${f.rounds_p99_ms.alone.join(' / ')} ms, beside the flood ${f.rounds_p99_ms.under_flood.join(' / ')} ms.`;
    lines.push('', `Fairness (quiet pod at ${f.rate} req/s over ${f.connections} keep-alive connections, opaque TCP to n2): alone ${l(f.alone)}; beside a pod on its node flooding on ${f.flood.held} connections (${f.flood.attempted} tried, ${f.flood.refused} refused, cap ${f.flood.max_connections}; ${f.flood.requests_per_s} req/s) ${l(f.under_flood)}. n1 counted ${f.refused_source_limit} source_limit refusals and read less from a source over its fair share for ${f.throttled_s ?? 0} s.${roundsText}`);
    lines.push('', `- fairness quiet: \`${f.commands.quiet.map(shellWord).join(' ')}\``, `- fairness flood: \`${f.commands.flood.map(shellWord).join(' ')}\``);
  }
  if (r.scale) {
    lines.push('', `Scale (${r.scale.pods} pods, ${r.scale.services} services, ${r.scale.nodes_watching} node agents watching): first sync ${r.scale.first_sync_s} s (${r.scale.first_sync_from_spawn_s} s from process start), one pod change to all nodes ${r.scale.change_to_all_nodes_ms} ms (median of ${r.scale.changes}; samples ${r.scale.change_samples_ms.join(', ')}), node RSS ${r.scale.node_rss_mib} MiB (${r.scale.node_empty_rss_mib} MiB with an empty mesh, so the config costs ${r.scale.node_config_mib} MiB), control plane RSS ${r.scale.controlplane_rss_mib} MiB, control plane start ${r.scale.controlplane_start_s} s.`);
  }
  if (PATHS.some((p) => r.commands[p])) {
    lines.push('', 'Commands (each inside the client pod\'s network namespace, `ip netns exec <pod> ...`):', '');
    for (const path of PATHS) {
      for (const [what, argv] of Object.entries(r.commands[path] ?? {})) lines.push(`- ${path} ${what}: \`${argv.map(shellWord).join(' ')}\``);
    }
  }
  if (r.errors) lines.push('', `Errors over all rounds: ${r.errors} failed requests or connections.`);
  return `${lines.join('\n')}\n`;
}

function renderPaths(r: BenchResults, lines: string[]): void {
  lines.push(`| path | ${METRICS.map((m) => m.label).join(' | ')} |`);
  lines.push(`|---|${METRICS.map(() => '---:').join('|')}|`);
  for (const path of PATHS) {
    const p = r.paths[path];
    lines.push(`| ${path} | ${METRICS.map((m) => cell(p?.[m.key])).join(' | ')} |`);
  }
  lines.push('', 'Ratios (value / direct ; value / reference, the HTTP paths against nginx-l7-mtls, the others against nginx-mtls):', '');
  lines.push(`| path | reference | ${METRICS.map((m) => m.label).join(' | ')} |`);
  lines.push(`|---|---|${METRICS.map(() => '---:').join('|')}|`);
  for (const path of PATHS) {
    const p = r.paths[path];
    const against = referenceOf(path);
    lines.push(`| ${path} | ${against} | ${METRICS.map((m) => `${ratio(p?.[m.key], r.paths.direct?.[m.key])} ; ${ratio(p?.[m.key], r.paths[against]?.[m.key])}`).join(' | ')} |`);
  }
  const mesh = Object.entries(r.ratios ?? {});
  if (mesh.length) {
    lines.push('', 'nodemesh against its nginx reference:', '', '| path | against | req/s | p99 @1k/s | daemon CPU / 1k req |', '|---|---|---:|---:|---:|');
    // The JSON's values, as written (three decimals).
    const times = (v: number | null) => (v === null ? '–' : `${v}x`);
    for (const [path, x] of mesh) lines.push(`| ${path} | ${x.against} | ${times(x.rps)} | ${times(x.p99_ms)} | ${times(x.cpu_s_per_1k_req)} |`);
  }
}
