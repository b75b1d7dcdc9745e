// The demo's four steps. Each one makes real traffic or reads a node's own
// account of it (admin API, /metrics, logs), checks what it expects and returns
// one line of evidence plus details for the report. The roles (client, outsider,
// Service, ports) are looked up by name in the cluster built from examples/demo.

import { readFile } from 'node:fs/promises';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import type { Cluster } from './cluster/cluster.ts';
import type { Mesh } from './cluster/mesh.ts';
import type { PlannedPod, PlannedService, PlannedServicePort } from './cluster/plan.ts';
import { serviceEndpoints } from './cluster/plan.ts';
import { openConnection, serverScript, type OpenConnection } from './cluster/servers.ts';
import { adminGet, metricsText, samples, total } from './demo-node-api.ts';
import type { CertsView, ConnectionView, Sample, WorkloadView } from './demo-node-api.ts';

/** Names in examples/demo that the steps rely on. */
export const ROLES = {
  client: 'demo/client',
  outsider: 'legacy/outsider',
  service: 'demo/server',
  /** The Service port carried as raw TCP. */
  servicePort: 'tcp-echo',
  /** The server port that demo/deny-legacy-admin closes to plaintext peers. */
  adminPort: 'admin',
} as const;

export interface StepResult {
  ok: boolean;
  /** What shows why the step passed or failed, in a sentence: the report wraps it to its width. */
  evidence: string;
  /** Printed as they are, one indented block each (wrapped to REPORT.width where the step has to). */
  details: string[];
}

/** The report's layout: it fits in a terminal of `width` columns; evidence and details start at their columns. */
export const REPORT = { width: 100, evidence: 5, details: 7 } as const;

/**
 * Words joined with spaces into lines that end by column REPORT.width, the
 * first starting at column `first`, the others at `rest`; without that leading
 * indentation. A word longer than a line has a line of its own.
 */
export function fill(words: readonly string[], first: number, rest = first): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    const start = lines.length === 0 ? first : rest;
    if (line !== '' && start + line.length + 1 + word.length > REPORT.width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

export interface Step {
  title: string;
  run(demo: Demo): Promise<StepResult>;
}

export interface Demo {
  cluster: Cluster;
  mesh: Mesh;
  /** Temporary: the config copy, the mesh's state and logs; removed on teardown. */
  workDir: string;
  /** The copy of examples/demo the control plane watches. */
  configDir: string;
}

interface Cast {
  client: PlannedPod;
  outsider: PlannedPod;
  service: PlannedService;
  port: PlannedServicePort;
  /** The Service's endpoints on its TCP port. */
  backends: { pod: PlannedPod; port: number }[];
}

function castOf(cluster: Cluster): Cast {
  const service = cluster.service(ROLES.service);
  const port = service.ports.find((p) => p.name === ROLES.servicePort);
  if (!port) throw new NodemeshError(ErrorCode.DEMO_CONFIG, `examples/demo: Service ${ROLES.service} has no port named ${ROLES.servicePort}`);
  const backends = serviceEndpoints(cluster, service, port);
  if (backends.length === 0) throw new NodemeshError(ErrorCode.DEMO_CONFIG, `examples/demo: Service ${ROLES.service} selects no pod`);
  return { client: cluster.pod(ROLES.client), outsider: cluster.pod(ROLES.outsider), service, port, backends };
}

function containerPort(pod: PlannedPod, name: string): number {
  const port = pod.ports.find((p) => p.name === name)?.port;
  if (port === undefined) throw new NodemeshError(ErrorCode.DEMO_CONFIG, `examples/demo: pod ${pod.namespace}/${pod.name} has no container port named ${name}`);
  return port;
}

const spiffe = (identity: string | null) => identity ?? 'no identity (plaintext)';
const ref = (pod: PlannedPod) => `${pod.namespace}/${pod.name}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retries `attempt` until it returns a passing result or `timeoutMs` is over; returns the last result. */
async function settle(attempt: () => Promise<StepResult>, timeoutMs = 5000): Promise<StepResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await attempt();
    if (result.ok || Date.now() > deadline) return result;
    await sleep(200);
  }
}

interface Attempt {
  connected: boolean;
  /** What the server sent (its greeting names the pod that answered). */
  reply: string;
  error: string;
}

/** One short connection from a pod: sends a line, reads until the server closes or the connection fails. */
async function attempt(cluster: Cluster, from: PlannedPod, host: string, port: number): Promise<Attempt> {
  const res = await cluster.exec(from.netns, [process.execPath, serverScript('tcp-client'), host, String(port), 'ping\n'], { allowFailure: true, timeoutMs: 15_000 });
  const error = res.stderr.split('\n').filter((l) => l && l !== 'connected').join('; ');
  return { connected: res.code === 0, reply: res.stdout.split('\n')[0] ?? '', error };
}

const traffic: Step = {
  title: 'Who talked to whom: client → Service VIP → servers, over mTLS HBONE',
  async run({ cluster }) {
    const { client, service, port, backends } = castOf(cluster);
    // One long-lived connection per backend, each open while the next starts: the
    // balancer compares two endpoints and takes the less loaded, so with the demo's
    // two replicas each gets one, and all stay visible in /connections.
    const conns: OpenConnection[] = [];
    try {
      const greetings: string[] = [];
      for (let i = 0; i < backends.length; i++) {
        const conn = await openConnection(cluster, client.netns, service.clusterIP, port.port);
        conns.push(conn);
        await conn.process.waitForOutput(/hello from \S+\n/, 10_000);
        greetings.push(conn.process.stdout.trim());
      }
      const sourceSide = await adminGet<ConnectionView[]>(cluster, client.node, '/connections');
      const result = await settle(() => checkTraffic(cluster, client, service, port, backends, sourceSide));
      result.details.push(`${ref(client)} read: ${greetings.map((g) => JSON.stringify(g)).join(', ')}`);
      return result;
    } finally {
      await Promise.all(conns.map((c) => c.close()));
    }
  },
};

async function checkTraffic(
  cluster: Cluster, client: PlannedPod, service: PlannedService, port: PlannedServicePort,
  backends: Cast['backends'], sourceSide: ConnectionView[],
): Promise<StepResult> {
  const details: string[] = [];
  let ok = true;
  for (const { pod, port: targetPort } of backends) {
    const inbound = (await adminGet<ConnectionView[]>(cluster, pod.node, '/connections')).find((c) =>
      c.listener === 'inbound' && c.source.workload === ref(client) && c.destination.ip === pod.ip && c.destination.port === targetPort);
    const outbound = sourceSide.find((c) => c.listener === 'outbound' && c.destination.ip === pod.ip && c.destination.service === `${service.namespace}/${service.name}`);
    const good = inbound !== undefined && outbound !== undefined && inbound.security === 'mutual_tls' && inbound.source.identity !== null && inbound.destination.identity !== null;
    ok &&= good;
    details.push(good
      ? `${ref(client)} [${client.node}] ${spiffe(inbound!.source.identity)}\n` +
        `    → ${service.namespace}/${service.name} ${service.clusterIP}:${port.port}\n` +
        `    → ${ref(pod)} ${pod.ip}:${targetPort} [${pod.node}] ${spiffe(inbound!.destination.identity)}   ${inbound!.security}, HBONE`
      : `✘ no meshed connection to ${ref(pod)} ${pod.ip}:${targetPort}: ${client.node} /connections ${outbound ? 'has' : 'lacks'} it (outbound), ` +
        `${pod.node} /connections ${inbound ? `shows security=${inbound.security}` : 'lacks it (inbound HBONE)'}`);
  }
  const metricsNode = backends[0]!.pod.node;
  const clientIdentity = sourceSide.find((c) => c.listener === 'outbound')?.source.identity ?? null;
  const opened = samples(await metricsText(cluster, metricsNode), 'nodemesh_tcp_connections_opened_total', {
    reporter: 'destination', source_principal: spiffe(clientIdentity), connection_security_policy: 'mutual_tls',
  });
  ok &&= clientIdentity !== null && total(opened) >= backends.length;
  const evidence = `${metricsNode} /metrics: nodemesh_tcp_connections_opened_total = ${total(opened)} for reporter="destination" ` +
    `source_principal="${spiffe(clientIdentity)}" connection_security_policy="mutual_tls"`;
  return { ok, evidence, details };
}

const certificates: Step = {
  title: 'Certificates: each node holds the identities of its own meshed pods, signed by one root',
  async run({ cluster }) {
    const details: string[] = [];
    let ok = true;
    const roots = new Set<string>();
    const held: string[] = [];
    for (const node of cluster.nodes) {
      const workloads = await adminGet<WorkloadView[]>(cluster, node.name, '/workloads');
      const certs = await adminGet<CertsView>(cluster, node.name, '/certs');
      certs.trustBundle.fingerprints.forEach((f) => roots.add(f));
      const wanted = new Set(workloads.map((w) => w.identity));
      const have = new Set(certs.certificates.map((c) => c.identity));
      const exact = wanted.size === have.size && [...wanted].every((id) => have.has(id));
      ok &&= exact && certs.certificates.every((c) => c.state === 'valid');
      if (!exact) details.push(`✘ ${node.name}: pods need ${[...wanted].join(', ') || 'nothing'} but the node holds ${[...have].join(', ') || 'nothing'}`);
      for (const cert of certs.certificates) {
        const owners = workloads.filter((w) => w.identity === cert.identity).map((w) => `${w.namespace}/${w.name}`);
        details.push(`${node.name}  ${cert.identity}  ${cert.state}, serial ${cert.serial?.slice(0, 12) ?? '-'}…, until ${cert.notAfter ?? '-'}  (for ${owners.join(', ') || 'no local pod'})`);
        held.push(`${node.name}: ${cert.identity}`);
      }
    }
    ok &&= roots.size === 1 && held.length > 0;
    const root = [...roots][0] ?? 'none';
    const evidence = `${held.join('; ')}; ${roots.size === 1 ? `every node trusts the one root ${root.slice(0, 23)}…` : `nodes trust ${roots.size} different roots`}`;
    return { ok, evidence, details };
  },
};

const policy: Step = {
  title: 'Policy: the legacy pod is refused on the admin port; meshed and echo traffic is allowed',
  async run({ cluster, mesh }) {
    const { client, outsider, backends } = castOf(cluster);
    const target = backends[0]!;
    const adminPort = containerPort(target.pod, ROLES.adminPort);
    const denied = await attempt(cluster, outsider, target.pod.ip, adminPort);
    const meshed = await attempt(cluster, client, target.pod.ip, adminPort);
    const plaintextEcho = await attempt(cluster, outsider, target.pod.ip, target.port);
    const refusal = await waitForRefusal(mesh, target.pod.node, outsider.ip, `${target.pod.ip}:${adminPort}`);
    const checks: [boolean, string][] = [
      [!denied.connected && denied.reply === '',
        `${ref(outsider)} (plaintext, no identity) → ${ref(target.pod)}:${adminPort}  ${denied.connected ? `answered ${JSON.stringify(denied.reply)}` : `refused (${denied.error || 'closed'})`}`],
      [meshed.connected && meshed.reply.startsWith('hello from'),
        `${ref(client)} (mTLS) → ${ref(target.pod)}:${adminPort}  ${meshed.connected ? `allowed: ${JSON.stringify(meshed.reply)}` : `failed: ${meshed.error}`}`],
      [plaintextEcho.connected && plaintextEcho.reply.startsWith('hello from'),
        `${ref(outsider)} (plaintext) → ${ref(target.pod)}:${target.port}  ${plaintextEcho.connected ? `allowed: ${JSON.stringify(plaintextEcho.reply)}` : `failed: ${plaintextEcho.error}`}`],
    ];
    // The refusal must come from a policy, not from e.g. a missing enrollment.
    const ok = checks.every(([good]) => good) && refusal?.policy !== undefined;
    const evidence = refusal
      ? `${target.pod.node} log: ${refusal.msg} (source ${refusal.sourceIp}, destination ${refusal.destination})`
      : `${target.pod.node} logged no refusal of ${outsider.ip} → ${target.pod.ip}:${adminPort}`;
    return { ok, evidence, details: checks.map(([good, line]) => `${good ? '✔' : '✘'} ${line}`) };
  },
};

interface LogLine {
  msg: string;
  sourceIp?: string;
  destination?: string;
  /** namespace/name of the policy that decided. */
  policy?: string;
}

/** The destination node's log line for a refused plaintext connection (the log reaches its file shortly after). */
async function waitForRefusal(mesh: Mesh, node: string, sourceIp: string, destination: string): Promise<LogLine | undefined> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const text = await readFile(mesh.logFile(`node-${node}`), 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      if (!line.includes('connection refused')) continue;
      const entry = JSON.parse(line) as LogLine;
      if (entry.sourceIp === sourceIp && entry.destination === destination) return entry;
    }
    if (Date.now() > deadline) return undefined;
    await sleep(100);
  }
}

const KEY_METRICS = [
  'nodemesh_tcp_connections_opened_total',
  'nodemesh_tcp_connections_closed_total',
  'nodemesh_tcp_received_bytes_total',
  'nodemesh_tcp_sent_bytes_total',
  'nodemesh_tcp_connections_denied_total',
];

const metrics: Step = {
  title: 'Metrics: what the server node reports',
  async run({ cluster }) {
    const { backends } = castOf(cluster);
    const node = backends[0]!.pod.node;
    // Byte counters are recorded when a connection closes, which trails the client's exit a little.
    return settle(async () => {
      const text = await metricsText(cluster, node);
      const destination = { reporter: 'destination' };
      const mtlsClosed = total(samples(text, 'nodemesh_tcp_connections_closed_total', { ...destination, connection_security_policy: 'mutual_tls' }));
      const mtlsBytes = total(samples(text, 'nodemesh_tcp_sent_bytes_total', { ...destination, connection_security_policy: 'mutual_tls' }));
      const plaintext = total(samples(text, 'nodemesh_tcp_connections_opened_total', { ...destination, connection_security_policy: 'none' }));
      const denied = total(samples(text, 'nodemesh_tcp_connections_denied_total', { ...destination, reason: 'policy' }));
      const ok = mtlsClosed > 0 && mtlsBytes > 0 && plaintext > 0 && denied > 0;
      return {
        ok,
        evidence: `${node}: mTLS connections closed ${mtlsClosed} (${mtlsBytes} bytes sent back), plaintext connections allowed ${plaintext}, denied by policy ${denied}`,
        details: seriesTable(node, KEY_METRICS.flatMap((name) => samples(text, name, destination))),
      };
    });
  },
};

const label = ([name, value]: [string, string]) => `${name}=${JSON.stringify(value)}`;
const labelKey = (sample: Sample) => JSON.stringify(Object.entries(sample.labels));
/** A, B, …, Z, AA, AB, …: names for the series of the table. */
const seriesName = (i: number): string => (i < 26 ? '' : seriesName(Math.floor(i / 26) - 1)) + String.fromCharCode(65 + (i % 26));

/**
 * The samples as a reader can take them in at REPORT.width columns, rather than
 * as /metrics prints them (300 columns a line): the labels every series has,
 * once; then each distinct set of labels (a series) once, named A, B, …, with
 * only the labels that differ, wrapped; then per metric its value in each
 * series ("-": the metric has no such series).
 */
function seriesTable(node: string, found: readonly Sample[]): string[] {
  const series = [...new Map(found.map((s) => [labelKey(s), s.labels])).values()];
  const common = new Map(Object.entries(series[0] ?? {}));
  for (const labels of series) for (const [name, value] of common) if (labels[name] !== value) common.delete(name);
  const at = REPORT.details;
  const block = (lead: string, labels: [string, string][]) =>
    fill([lead, ...labels.map(label)], at, at + 2).map((line, i) => (i === 0 ? line : `  ${line}`)).join('\n');
  const blocks = [block(`${node} /metrics, on every series:`, [...common])];
  series.forEach((labels, i) => blocks.push(block(`series ${seriesName(i)}:`, Object.entries(labels).filter(([name]) => !common.has(name)))));
  const names = [...new Set(found.map((s) => s.name))];
  const cell = (name: string, labels: Record<string, string>) => {
    const sample = found.find((s) => s.name === name && labelKey(s) === JSON.stringify(Object.entries(labels)));
    return sample ? String(sample.value) : '-';
  };
  const nameWidth = Math.max(...names.map((n) => n.length));
  const widths = series.map((labels, i) => Math.max(seriesName(i).length, ...names.map((n) => cell(n, labels).length)));
  const row = (first: string, cells: string[]) => [first.padEnd(nameWidth), ...cells.map((c, i) => c.padStart(widths[i]!))].join('  ').trimEnd();
  blocks.push([row('', series.map((_, i) => seriesName(i))), ...names.map((n) => row(n, series.map((labels) => cell(n, labels))))].join('\n'));
  return blocks;
}

export const STEPS: readonly Step[] = [traffic, certificates, policy, metrics];
