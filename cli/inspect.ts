// The operator commands, after `istioctl ztunnel-config` and `linkerd viz`:
// `nodemesh status|workloads|certs|connections|policies|routes|explain|tap|logging`.
// Each asks one node (`--admin HOST:PORT`), several (comma-separated), or in a
// cluster one (`--node NAME`) or every node through the Kubernetes API, and
// prints an aligned table, or `-o json|yaml` for a script: always a list of
// objects, each naming its `node`. Filters (`--namespace`, `--workload`) are
// checked here as the node checks them, so a hostile value is a usage error
// before anything is sent.
//
// Exit codes a script can use: 0 the answer is good; 1 a node could not be
// asked (unreachable, or it answered an error); 2 the command line is wrong;
// 3 the nodes answered and the answer is no (`status`: a node not ready,
// disconnected from the control plane or holding a certificate that is not
// valid; `explain`: a target would be refused; `certs`: a certificate not valid).

import { isIP } from 'node:net';
import type { FlagSpec } from './args.ts';
import { parseFlags, usageOf, UsageError } from './args.ts';
import { adminRequest, directTargets, openTap, parseAdminList } from './admin-client.ts';
import type { AdminTarget } from './admin-client.ts';
import { parseOutput, safe, structured, table, until } from './output.ts';
import type { Column, Output } from './output.ts';
import { TAP_EVENTS, TapFilterError, parseTapFilter } from '../daemon/tap.ts';

export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, NOT_OK: 3 } as const;

const TARGET_FLAGS = {
  admin: { type: 'string', description: 'node admin APIs, HOST:PORT[,HOST:PORT...]; without it, nodes are reached through the Kubernetes API' },
  node: { type: 'string', description: 'in a cluster: only the node of this name (default every node)' },
  kubeconfig: { type: 'string', description: 'kubeconfig file (default $KUBECONFIG, ~/.kube/config, or the in-cluster account)' },
  'mesh-namespace': { type: 'string', default: 'nodemesh-system', description: 'namespace of the nodemesh-node pods' },
  output: { type: 'string', short: 'o', default: 'table', description: 'table, json or yaml' },
} as const satisfies Record<string, FlagSpec>;
const NAMESPACE_FLAG = { namespace: { type: 'string', description: 'only what has a workload in this namespace' } } as const satisfies Record<string, FlagSpec>;
const WORKLOAD_FLAG = { workload: { type: 'string', description: 'only what has this workload (pod name, or its Deployment\'s)' } } as const satisfies Record<string, FlagSpec>;

type Values = Record<string, string | boolean | undefined>;

interface Context {
  command: string;
  flags: Values;
  output: Output;
  targets: AdminTarget[];
  filter: { namespace?: string; workload?: string };
}

interface Spec {
  summary: string;
  flags: Record<string, FlagSpec>;
  run(ctx: Context): Promise<number>;
}

// ---- answers of the admin API, as far as the commands read them ----

interface WorkloadView {
  uid: string; namespace: string; name: string; workloadName: string; serviceAccount: string; ip: string; mtlsMode: string; identity: string;
  capture: string | null; certificate: { state: string; notAfter: string | null; serial: string | null } | null;
}
interface CertView { identity: string; state: string; serial: string | null; notBefore: string | null; notAfter: string | null; renewAt: string | null; lastError: string | null }
interface End { ip: string; port?: number; workload: string | null; identity: string | null; service?: string | null }
interface ConnectionView { id: number; listener: string; reporter: string; source: End; destination: End; security: string; durationMs: number; bytesReceived: number; bytesSent: number; worker?: number }
interface PolicyView { namespace: string; name: string; action: string; selector: Record<string, string> | null; rules: unknown[] }
interface RouteView {
  kind?: string; namespace: string; name: string; parents: { namespace: string; name: string; port: number }[]; hostnames: string[];
  rules: { backendRefs: { namespace: string; name: string; port: number; weight: number }[] }[];
}
interface ConfigDump {
  node: string; epoch: string; version: number; synced: boolean;
  controlPlane: { address: string; connected: boolean; lastError: string | null; lastUpdate: string | null };
  rejected: unknown[];
}
interface ExplainView {
  node: string;
  source: { ip: string; workload: string | null; enrolled: boolean; local: boolean; identity: string | null };
  capture: string; service: string | null;
  targets: { ip: string; port: number; workload: string | null; path: string; node: string | null; security: string; authorization: { allowed: boolean; policy?: string; reason: string } | null }[];
}

// ---- the commands ----

const COMMANDS: Record<string, Spec> = {
  status: {
    summary: 'Each node: ready, config version, control-plane connection, certificates and the earliest expiry. Exits 3 if a node is not all good.',
    flags: { ...TARGET_FLAGS },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => {
        const [dump, certs] = await Promise.all([adminRequest<ConfigDump>(t, '/config_dump'), adminRequest<{ certificates: CertView[] }>(t, '/certs')]);
        const states = countBy(certs.certificates.map((c) => c.state));
        const certsOk = certs.certificates.every((c) => c.state === 'valid' || c.state === 'renewing');
        const expiries = certs.certificates.map((c) => c.notAfter).filter((n): n is string => Boolean(n)).sort();
        return [{
          node: dump.node, ready: dump.synced && certsOk, configVersion: dump.version, configEpoch: dump.epoch, synced: dump.synced,
          controlPlane: { address: dump.controlPlane.address, connected: dump.controlPlane.connected, lastError: dump.controlPlane.lastError, lastUpdate: dump.controlPlane.lastUpdate },
          certificates: { count: certs.certificates.length, states, earliestExpiry: expiries[0] ?? null },
          rejected: dump.rejected.length,
        }];
      });
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'READY', value: (r) => (r.ready ? 'yes' : 'no') },
        { header: 'CONFIG', value: (r) => `v${r.configVersion}${r.synced ? '' : ' (not synced)'}` },
        { header: 'CONTROL-PLANE', value: (r) => (r.controlPlane.connected ? 'connected' : `disconnected${r.controlPlane.lastError ? `: ${r.controlPlane.lastError}` : ''}`) },
        { header: 'CERTS', value: (r) => Object.entries(r.certificates.states).map(([s, n]) => `${n} ${s}`).join(', ') || 'none' },
        { header: 'EXPIRES', value: (r) => until(r.certificates.earliestExpiry) },
        { header: 'REJECTED', value: (r) => r.rejected },
      ]);
      return rows.every((r) => r.ready && r.controlPlane.connected) ? EXIT.OK : EXIT.NOT_OK;
    },
  },
  workloads: {
    summary: 'The enrolled workloads of each node: identity, how they are captured, mTLS mode, certificate.',
    flags: { ...TARGET_FLAGS, ...NAMESPACE_FLAG, ...WORKLOAD_FLAG },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => (await adminRequest<WorkloadView[]>(t, '/workloads'))
        .filter((w) => (!ctx.filter.namespace || w.namespace === ctx.filter.namespace) && (!ctx.filter.workload || w.name === ctx.filter.workload || w.workloadName === ctx.filter.workload))
        .map((w) => ({ node: t.label, ...w })));
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'NAMESPACE', value: (r) => r.namespace },
        { header: 'NAME', value: (r) => r.name },
        { header: 'IP', value: (r) => r.ip },
        { header: 'IDENTITY', value: (r) => r.identity },
        { header: 'CAPTURE', value: (r) => r.capture },
        { header: 'MTLS', value: (r) => r.mtlsMode },
        { header: 'CERT', value: (r) => r.certificate?.state ?? 'none' },
        { header: 'EXPIRES', value: (r) => until(r.certificate?.notAfter) },
      ]);
      return EXIT.OK;
    },
  },
  certs: {
    summary: 'The workload certificates of each node and its trust bundle. Exits 3 if a certificate is not valid.',
    flags: { ...TARGET_FLAGS, ...NAMESPACE_FLAG },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => {
        const answer = await adminRequest<{ trustBundle: { fingerprints: string[] }; certificates: CertView[] }>(t, '/certs');
        return answer.certificates
          .filter((c) => !ctx.filter.namespace || c.identity.includes(`/ns/${ctx.filter.namespace}/sa/`))
          .map((c) => ({ node: t.label, ...c, trustBundle: answer.trustBundle.fingerprints }));
      });
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'IDENTITY', value: (r) => r.identity },
        { header: 'STATE', value: (r) => r.state },
        { header: 'SERIAL', value: (r) => r.serial },
        { header: 'EXPIRES', value: (r) => until(r.notAfter) },
        { header: 'RENEWS', value: (r) => until(r.renewAt) },
        { header: 'ROOT', value: (r) => r.trustBundle.map((f) => f.slice(0, 23)).join(' ') },
        { header: 'ERROR', value: (r) => r.lastError },
      ]);
      return rows.every((r) => r.state === 'valid' || r.state === 'renewing') ? EXIT.OK : EXIT.NOT_OK;
    },
  },
  connections: {
    summary: 'The connections each node carries now, with both identities, bytes and security.',
    flags: { ...TARGET_FLAGS, ...NAMESPACE_FLAG, ...WORKLOAD_FLAG },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => (await adminRequest<ConnectionView[]>(t, '/connections'))
        .filter((c) => endsMatch(ctx.filter, [c.source, c.destination]))
        .map((c) => ({ node: t.label, ...c })));
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        // A node with one data-plane worker names none.
        { header: 'WORKER', value: (r) => r.worker ?? 0 },
        { header: 'LISTENER', value: (r) => r.listener },
        { header: 'SOURCE', value: (r) => r.source.workload ?? r.source.ip },
        { header: 'SOURCE-IDENTITY', value: (r) => r.source.identity },
        { header: 'DESTINATION', value: (r) => `${r.destination.workload ?? r.destination.ip}:${r.destination.port}` },
        { header: 'DESTINATION-IDENTITY', value: (r) => r.destination.identity },
        { header: 'SERVICE', value: (r) => r.destination.service },
        { header: 'SECURITY', value: (r) => r.security },
        { header: 'AGE', value: (r) => until(new Date(Date.now() + r.durationMs).toISOString()) },
        { header: 'BYTES IN/OUT', value: (r) => `${r.bytesReceived}/${r.bytesSent}` },
      ]);
      return EXIT.OK;
    },
  },
  policies: {
    summary: 'The authorization policies each node knows.',
    flags: { ...TARGET_FLAGS, ...NAMESPACE_FLAG },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => (await adminRequest<PolicyView[]>(t, '/policies'))
        .filter((p) => !ctx.filter.namespace || p.namespace === ctx.filter.namespace)
        .map((p) => ({ node: t.label, ...p })));
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'NAMESPACE', value: (r) => r.namespace },
        { header: 'NAME', value: (r) => r.name },
        { header: 'ACTION', value: (r) => r.action },
        { header: 'SELECTOR', value: (r) => (r.selector ? Object.entries(r.selector).map(([k, v]) => `${k}=${v}`).join(',') : '(every workload)') },
        { header: 'RULES', value: (r) => r.rules.length },
      ]);
      return EXIT.OK;
    },
  },
  routes: {
    summary: 'The HTTP and gRPC routes each node applies: parents, hostnames, rules and backends.',
    flags: { ...TARGET_FLAGS, ...NAMESPACE_FLAG },
    async run(ctx) {
      const rows = await perNode(ctx, async (t) => (await adminRequest<RouteView[]>(t, '/routes'))
        .filter((r) => !ctx.filter.namespace || r.namespace === ctx.filter.namespace)
        .map((r) => ({ node: t.label, ...r })));
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'NAMESPACE', value: (r) => r.namespace },
        { header: 'NAME', value: (r) => r.name },
        { header: 'KIND', value: (r) => r.kind || 'HTTPRoute' },
        { header: 'PARENTS', value: (r) => r.parents.map((p) => `${p.namespace}/${p.name}${p.port ? `:${p.port}` : ''}`).join(',') },
        { header: 'HOSTNAMES', value: (r) => r.hostnames.join(',') },
        { header: 'RULES', value: (r) => r.rules.length },
        { header: 'BACKENDS', value: (r) => [...new Set(r.rules.flatMap((rule) => rule.backendRefs.map((b) => `${b.namespace}/${b.name}:${b.port} (${b.weight})`)))].join(', ') },
      ]);
      return EXIT.OK;
    },
  },
  explain: {
    summary: 'What the data plane would do with a connection: capture, path, mTLS, and the policy that decides. Exits 3 if a target would be refused.',
    flags: {
      ...TARGET_FLAGS,
      source: { type: 'string', required: true, description: 'the client\'s IPv4 address' },
      destination: { type: 'string', required: true, description: 'IPv4:PORT, a Service VIP or a pod' },
    },
    async run(ctx) {
      const source = String(ctx.flags.source);
      const destination = String(ctx.flags.destination);
      if (isIP(source) !== 4) throw new UsageError(`nodemesh explain: --source: ${JSON.stringify(source.slice(0, 80))} is not an IPv4 address`);
      const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(destination);
      if (!m || isIP(m[1]!) !== 4 || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`nodemesh explain: --destination: ${JSON.stringify(destination.slice(0, 80))} is not IPv4:PORT`);
      const query = new URLSearchParams({ source, destination }).toString();
      const answers = await perNode(ctx, async (t) => [await adminRequest<ExplainView>(t, `/explain?${query}`)]);
      if (ctx.output !== 'table') {
        process.stdout.write(structured(ctx.output, answers));
      } else {
        for (const a of answers) {
          process.stdout.write(`${safe(a.node)}: ${safe(a.source.workload ?? a.source.ip)} (${a.source.identity ? safe(a.source.identity) : 'no identity'}, ${a.source.enrolled ? 'enrolled' : 'not enrolled'}) → ${safe(destination)}${a.service ? ` (Service ${safe(a.service)})` : ''}\n`);
          process.stdout.write(`  capture: ${safe(a.capture)}\n`);
          process.stdout.write(indent(table<ExplainView['targets'][number]>([
            { header: 'TARGET', value: (r) => `${r.ip}:${r.port}` },
            { header: 'WORKLOAD', value: (r) => r.workload },
            { header: 'NODE', value: (r) => r.node },
            { header: 'PATH', value: (r) => r.path },
            { header: 'SECURITY', value: (r) => r.security },
            { header: 'DECISION', value: (r) => (r.authorization ? (r.authorization.allowed ? 'allow' : 'deny') : 'not decided by the mesh') },
            { header: 'POLICY', value: (r) => r.authorization?.policy },
            { header: 'REASON', value: (r) => r.authorization?.reason },
          ], a.targets)));
        }
      }
      return answers.some((a) => a.targets.some((t) => t.authorization && !t.authorization.allowed)) ? EXIT.NOT_OK : EXIT.OK;
    },
  },
  tap: {
    summary: 'Streams, as they happen, connection opens and closes, every refusal with its reason and every HTTP and gRPC request, filtered on the node. Ends at Ctrl-C, after --count events or --duration seconds.',
    flags: {
      ...TARGET_FLAGS, ...NAMESPACE_FLAG, ...WORKLOAD_FLAG,
      event: { type: 'string', description: `only these events, comma-separated: ${TAP_EVENTS.join(', ')}` },
      count: { type: 'string', description: 'stop after this many events' },
      duration: { type: 'string', description: 'stop after this many seconds' },
    },
    async run(ctx) {
      const count = ctx.flags.count === undefined ? undefined : wholeNumber('count', String(ctx.flags.count), 1, 1_000_000);
      const duration = ctx.flags.duration === undefined ? undefined : wholeNumber('duration', String(ctx.flags.duration), 1, 86_400);
      const query = new URLSearchParams();
      if (ctx.flags.event !== undefined) query.set('event', String(ctx.flags.event));
      if (ctx.filter.namespace) query.set('namespace', ctx.filter.namespace);
      if (ctx.filter.workload) query.set('workload', ctx.filter.workload);
      checkTapFilter('tap', query);
      let seen = 0;
      let stop!: () => void;
      const stopped = new Promise<void>((resolve) => (stop = resolve));
      if (ctx.output === 'table') process.stdout.write(`${TAP_HEADER}\n`);
      const streams = await Promise.all(ctx.targets.map((t) => openTap(t, query, (event) => {
        if (count !== undefined && seen >= count) return;
        seen++;
        const line = { node: t.label, ...event };
        process.stdout.write(ctx.output === 'json' ? `${JSON.stringify(line)}\n` : ctx.output === 'yaml' ? `---\n${structured('yaml', line)}` : `${tapLine(line)}\n`);
        if (count !== undefined && seen >= count) stop();
      })));
      const timer = duration === undefined ? undefined : setTimeout(stop, duration * 1000);
      const onSignal = () => stop();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await Promise.race([stopped, ...streams.map((s) => s.done)]);
      } finally {
        clearTimeout(timer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        streams.forEach((s) => s.close());
      }
      return EXIT.OK;
    },
  },
  logging: {
    summary: 'Each node\'s log level and debug tracers; with --level or --tracers, changes them.',
    flags: {
      ...TARGET_FLAGS,
      level: { type: 'string', description: 'debug, info, warn or error' },
      tracers: { type: 'string', description: 'comma-separated tracer names, "*" for all, "" for none' },
    },
    async run(ctx) {
      const query = new URLSearchParams();
      if (ctx.flags.level !== undefined) {
        if (!['debug', 'info', 'warn', 'error'].includes(String(ctx.flags.level))) throw new UsageError(`nodemesh logging: --level: ${JSON.stringify(String(ctx.flags.level).slice(0, 40))} is not one of debug, info, warn, error`);
        query.set('level', String(ctx.flags.level));
      }
      if (ctx.flags.tracers !== undefined) {
        const tracers = String(ctx.flags.tracers);
        if (!/^(\*|[a-z]+(,[a-z]+)*)?$/.test(tracers)) throw new UsageError(`nodemesh logging: --tracers: ${JSON.stringify(tracers.slice(0, 80))} is not a comma-separated list of tracer names`);
        query.set('tracers', tracers);
      }
      const change = [...query.keys()].length > 0;
      const rows = await perNode(ctx, async (t) => [{ node: t.label, ...(await adminRequest<{ level: string; tracers: string[]; known?: { name: string }[] }>(t, change ? `/logging?${query}` : '/logging', change ? 'POST' : 'GET')) }]);
      print(ctx, rows, [
        { header: 'NODE', value: (r) => r.node },
        { header: 'LEVEL', value: (r) => r.level },
        { header: 'TRACERS', value: (r) => r.tracers.join(',') || 'none' },
        ...(change ? [] : [{ header: 'KNOWN', value: (r: typeof rows[number]) => r.known?.map((k) => k.name).join(',') }]),
      ]);
      return EXIT.OK;
    },
  },
};

export const INSPECT_COMMANDS = Object.keys(COMMANDS);

/** `nodemesh <command> ...` for one of the operator commands; resolves with the exit status. */
export async function runInspectCommand(command: string, argv: string[]): Promise<number> {
  const spec = COMMANDS[command]!;
  const flags = parseFlags(command, spec.summary, argv, spec.flags) as Values;
  if (flags.help) {
    process.stdout.write(usageOf(command, spec.summary, spec.flags) + EXIT_CODES_HELP);
    return EXIT.OK;
  }
  const output = parseOutput(command, String(flags.output));
  const filter: Context['filter'] = {};
  if (flags.namespace !== undefined) filter.namespace = String(flags.namespace);
  if (flags.workload !== undefined) filter.workload = String(flags.workload);
  checkTapFilter(command, new URLSearchParams(filter as Record<string, string>));
  const targets = await resolveTargets(command, flags);
  try {
    return await spec.run({ command, flags, output, targets, filter });
  } finally {
    await Promise.all(targets.map((t) => t.close()));
  }
}

const EXIT_CODES_HELP = `
exit codes:
  0  the answer is good
  1  a node could not be asked (unreachable, or it answered an error)
  2  the command line is wrong
  3  the answer is no (status: a node not all good; explain: a target refused; certs: one not valid)
`;

async function resolveTargets(command: string, flags: Values): Promise<AdminTarget[]> {
  if (flags.admin !== undefined) {
    if (flags.node !== undefined) throw new UsageError(`nodemesh ${command}: --admin and --node exclude each other`);
    return directTargets(parseAdminList(command, String(flags.admin)));
  }
  if (flags.node !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(String(flags.node))) {
    throw new UsageError(`nodemesh ${command}: --node: ${JSON.stringify(String(flags.node).slice(0, 80))} is not a Kubernetes node name`);
  }
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(String(flags['mesh-namespace']))) {
    throw new UsageError(`nodemesh ${command}: --mesh-namespace: ${JSON.stringify(String(flags['mesh-namespace']).slice(0, 80))} is not a namespace name`);
  }
  const { kubernetesTargets } = await import('./kube-forward.ts');
  return kubernetesTargets({ node: flags.node as string | undefined, kubeconfig: flags.kubeconfig as string | undefined, namespace: String(flags['mesh-namespace']) });
}

function checkTapFilter(command: string, query: URLSearchParams): void {
  try {
    parseTapFilter(query);
  } catch (err) {
    if (err instanceof TapFilterError) throw new UsageError(`nodemesh ${command}: ${err.message.replace(/^tap: (\w+):/, (_m, f: string) => `--${f}:`)}`);
    throw err;
  }
}

function wholeNumber(flag: string, value: string, min: number, max: number): number {
  const n = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`nodemesh tap: --${flag}: ${JSON.stringify(value.slice(0, 40))} is not a whole number from ${min} to ${max}`);
  return n;
}

/** Asks every target; rows in target order. */
async function perNode<R>(ctx: Context, ask: (t: AdminTarget) => Promise<R[]>): Promise<R[]> {
  return (await Promise.all(ctx.targets.map(ask))).flat();
}

function print<R>(ctx: Context, rows: R[], columns: Column<R>[]): void {
  process.stdout.write(ctx.output === 'table' ? (rows.length ? table(columns, rows) : 'nothing found\n') : structured(ctx.output, rows));
}

function endsMatch(filter: Context['filter'], ends: End[]): boolean {
  const refs = ends.map((e) => e.workload).filter((w): w is string => Boolean(w));
  if (filter.namespace && !refs.some((w) => w.split('/')[0] === filter.namespace)) return false;
  if (filter.workload && !refs.some((w) => w.split('/')[1] === filter.workload)) return false;
  return true;
}

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

function indent(text: string): string {
  return text.split('\n').map((l) => (l ? `  ${l}` : l)).join('\n');
}

const TAP_HEADER = `${'TIME'.padEnd(12)}  ${'NODE'.padEnd(12)}  ${'EVENT'.padEnd(7)}  ${'SOURCE'.padEnd(24)}  ${'DESTINATION'.padEnd(30)}  DETAIL`;

/** One tap event as a terminal line: time, node, event, both ends, then what the event says. */
export function tapLine(e: Record<string, unknown>): string {
  const end = (x: unknown) => {
    const v = (x ?? {}) as Partial<End>;
    return `${v.workload ?? v.ip ?? '?'}${v.port ? `:${v.port}` : ''}`;
  };
  const src = (e.source ?? {}) as Partial<End>;
  const dst = (e.destination ?? {}) as Partial<End>;
  const time = typeof e.time === 'string' ? e.time.slice(11, 23) : '';
  const ids = `${src.identity ?? 'no identity'} → ${dst.identity ?? 'no identity'}`;
  let detail: string;
  switch (e.event) {
    case 'request':
      detail = e.protocol === 'grpc'
        ? `gRPC ${e.grpcMethod} grpc-status=${e.grpcStatus ?? '-'} http=${e.status} ${e.latencyMs}ms (${e.reporter})`
        : `${e.method} ${e.path} ${e.status} ${e.latencyMs}ms ${e.protocol} (${e.reporter})`;
      break;
    case 'refusal':
      detail = `${e.what} refused: ${e.reason}${e.policy ? ` by ${e.policy}` : ''}${e.method ? ` (${e.method} ${e.path})` : ''}: ${e.message}`;
      break;
    case 'close':
      detail = `${e.security} ${e.durationMs}ms in ${e.bytesReceived}B out ${e.bytesSent}B: ${e.reason} (${e.listener})`;
      break;
    default:
      detail = `${e.security} (${e.listener})`;
  }
  return `${safe(time).padEnd(12)}  ${safe(e.node).padEnd(12)}  ${safe(e.event).padEnd(7)}  ${safe(end(e.source)).padEnd(24)}  ${safe(end(e.destination)).padEnd(30)}  ${safe(detail)}  [${safe(ids)}]`;
}
