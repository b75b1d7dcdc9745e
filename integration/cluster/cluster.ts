// A Kubernetes-like cluster made of network namespaces: an underlay bridge with a
// router, a control-plane namespace, node namespaces that route pod CIDRs, pods
// wired as the cluster's CNI profile says (network.ts), and kube-proxy-style
// ClusterIP Services. Everything the cluster starts or creates is removed by
// `teardown()`, which also runs on process exit and on SIGINT/SIGTERM, so a failed
// test leaves nothing behind.

import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import { logger } from '../../core/log.ts';
import type { ClusterPlan, ClusterSpec, CniProfile, NamespaceSpec, PlannedNode, PlannedPod, PlannedService, PodSpec, ServiceSpec } from './plan.ts';
import { planCluster, planPod, planService } from './plan.ts';
import { buildNodes, buildPod, buildUnderlay, unwirePod } from './network.ts';
import { renderKubeProxyRules, KUBE_SERVICES } from './kube-proxy.ts';
import { ClusterCommandError, belongsTo, deleteNamespace, deleteNamespaceSync, listNamespaces, listNamespacesSync } from './netns.ts';
import { ProcessTracker, type ClusterProcess, type SpawnOptions } from './processes.ts';
import { createCgroup, inCgroup, removeCgroups } from './cgroup.ts';
import { parseSavedTable } from '../../agent/iptables.ts';

const log = logger('cluster');

export interface ExecOptions {
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Resolve with a non-zero exit status instead of rejecting. */
  allowFailure?: boolean;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class Cluster implements ClusterPlan {
  readonly prefix: string;
  /** How pods are wired; tests put it in their titles as `[cni=<profile>]`. */
  readonly cni: CniProfile;
  readonly underlay: ClusterPlan['underlay'];
  readonly controlPlane: ClusterPlan['controlPlane'];
  readonly nodes: PlannedNode[];
  readonly pods: PlannedPod[];
  readonly services: PlannedService[];
  readonly namespaces: NamespaceSpec[];
  readonly #processes = new ProcessTracker();
  readonly #teardownHooks: (() => Promise<void> | void)[] = [];
  readonly #cgroups = new Set<string>();
  #teardown: Promise<void> | undefined;

  constructor(plan: ClusterPlan) {
    this.prefix = plan.prefix;
    this.cni = plan.cni;
    this.underlay = plan.underlay;
    this.controlPlane = plan.controlPlane;
    this.nodes = plan.nodes;
    this.pods = plan.pods;
    this.services = plan.services;
    this.namespaces = plan.namespaces;
  }

  node(name: string): PlannedNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new NodemeshError(ErrorCode.CLUSTER_LOOKUP, `cluster ${this.prefix}: no node ${JSON.stringify(name)}; nodes are ${this.nodes.map((n) => n.name).join(', ')}`);
    return node;
  }

  /** A pod by name ("name" in any namespace when unique, or "namespace/name"). */
  pod(ref: string): PlannedPod {
    const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
    const found = this.pods.filter((p) => p.name === name && (namespace === undefined || p.namespace === namespace));
    if (found.length !== 1) throw new NodemeshError(ErrorCode.CLUSTER_LOOKUP, `cluster ${this.prefix}: ${found.length ? 'ambiguous' : 'no'} pod ${JSON.stringify(ref)}; pods are ${this.pods.map((p) => `${p.namespace}/${p.name}`).join(', ')}`);
    return found[0]!;
  }

  service(ref: string): PlannedService {
    const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : ['default', ref];
    const svc = this.services.find((s) => s.namespace === namespace && s.name === name);
    if (!svc) throw new NodemeshError(ErrorCode.CLUSTER_LOOKUP, `cluster ${this.prefix}: no service ${JSON.stringify(ref)}`);
    return svc;
  }

  #checkOwn(netns: string): void {
    if (!belongsTo(netns, this.prefix)) throw new NodemeshError(ErrorCode.CLUSTER_LOOKUP, `cluster ${this.prefix}: ${JSON.stringify(netns)} is not one of its namespaces`);
  }

  /** Starts a long-running process in one of the cluster's namespaces; teardown stops it. */
  spawn(netns: string, argv: string[], opts?: SpawnOptions): ClusterProcess {
    this.#checkSpawn(netns, argv);
    return this.#processes.spawn(['ip', 'netns', 'exec', netns, ...argv], opts);
  }

  #checkSpawn(netns: string, argv: string[]): void {
    this.#checkOwn(netns);
    if (this.#teardown) throw new NodemeshError(ErrorCode.CLUSTER_GONE, `cluster ${this.prefix} is torn down; cannot start ${argv.join(' ')}`);
  }

  /**
   * Starts a node's daemon in the node's namespace and in a cgroup of its own
   * (`<prefix>-<name>`, as its DaemonSet pod's container would be: cgroup.ts);
   * teardown stops it and removes the cgroup.
   */
  spawnNode(netns: string, name: string, argv: string[], opts?: SpawnOptions): ClusterProcess {
    this.#checkSpawn(netns, argv);
    const cgroup = createCgroup(`${this.prefix}-${name}`);
    if (!cgroup) return this.spawn(netns, argv, opts);
    this.#cgroups.add(cgroup);
    return this.#processes.spawn(inCgroup(cgroup, netns, argv), opts);
  }

  /**
   * Starts a long-running process in the host's namespaces, for one that puts
   * itself into the cluster's (a container engine given `--network ns:...`);
   * teardown stops it.
   */
  spawnOnHost(argv: string[], opts?: SpawnOptions): ClusterProcess {
    if (this.#teardown) throw new NodemeshError(ErrorCode.CLUSTER_GONE, `cluster ${this.prefix} is torn down; cannot start ${argv.join(' ')}`);
    return this.#processes.spawn(argv, opts);
  }

  /** Runs a command to completion in one of the cluster's namespaces. */
  async exec(netns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const proc = this.spawn(netns, argv, { env: opts.env });
    proc.child.stdin!.end(opts.input ?? '');
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const timer = setTimeout(() => proc.signal('SIGKILL'), timeoutMs);
    const exit = await proc.exited.finally(() => clearTimeout(timer));
    const result = { code: exit.code, stdout: proc.stdout, stderr: proc.stderr };
    if (exit.code !== 0 && !opts.allowFailure) {
      const why = exit.signal ? `killed by ${exit.signal}${exit.signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}` : `exited with status ${exit.code}`;
      throw new ClusterCommandError(['ip', 'netns', 'exec', netns, ...argv], why, proc.stderr);
    }
    return result;
  }

  /** Adds and wires a pod, then updates every node's Service rules. */
  async addPod(spec: PodSpec): Promise<PlannedPod> {
    const pod = planPod(this, spec);
    await buildPod(this, pod);
    await this.syncServices();
    return pod;
  }

  /** Deletes a pod's namespace (its veth and routes go with it), what its node keeps for it, and its Service endpoints. */
  async removePod(ref: string): Promise<void> {
    const pod = this.pod(ref);
    await unwirePod(this, pod);
    await deleteNamespace(pod.netns);
    this.pods.splice(this.pods.indexOf(pod), 1);
    await this.syncServices();
  }

  async addService(spec: ServiceSpec): Promise<PlannedService> {
    const svc = planService(this, spec);
    await this.syncServices();
    return svc;
  }

  /** Reprograms every node's KUBE-* chains from the current pods and Services, as kube-proxy would. */
  async syncServices(): Promise<void> {
    await Promise.all(this.nodes.map(async (node) => {
      const nat = parseSavedTable(await this.exec(node.netns, ['iptables-save', '-t', 'nat']).then((r) => r.stdout), 'nat');
      const jumps = (chain: string) => (nat.rules.get(chain) ?? []).includes(`-A ${chain} -j ${KUBE_SERVICES}`);
      const input = renderKubeProxyRules(this, nat.chains, { prerouting: jumps('PREROUTING'), output: jumps('OUTPUT') });
      await this.exec(node.netns, ['iptables-restore', '--noflush', '-w'], { input });
    }));
  }

  /**
   * Leaves the cluster up when this process exits (for exploring by hand), with
   * whatever it runs; remove it later with deletePrefix (cluster-cli down).
   */
  keepAfterExit(): void {
    liveClusters.delete(this);
    updateExitHooks();
  }

  /** Runs before processes are stopped and namespaces deleted (latest first). */
  onTeardown(hook: () => Promise<void> | void): void {
    this.#teardownHooks.push(hook);
  }

  /**
   * Stops every process and deletes every namespace of the cluster; safe to call
   * again. The exit and signal hooks stay until it is done: a second Ctrl-C waits
   * for it, and a process that dies halfway still tears down synchronously.
   */
  teardown(): Promise<void> {
    this.#teardown ??= (async () => {
      try {
        for (const hook of this.#teardownHooks.reverse()) {
          try {
            await hook();
          } catch (err) {
            log.warn('teardown hook failed', { cluster: this.prefix, error: String(err) });
          }
        }
        await this.#processes.stopAll();
        removeCgroups(this.#cgroups);
        const mine = (await listNamespaces()).filter((ns) => belongsTo(ns, this.prefix));
        const pods = mine.filter((ns) => ns.includes('-pod-'));
        await Promise.all(pods.map(deleteNamespace));
        for (const ns of mine.filter((n) => !pods.includes(n))) await deleteNamespace(ns);
      } finally {
        liveClusters.delete(this);
        updateExitHooks();
      }
    })();
    return this.#teardown;
  }

  /** The last resort in a process 'exit' hook: nothing asynchronous runs there. */
  teardownSync(): void {
    this.#processes.killAllSync();
    removeCgroups(this.#cgroups);
    for (const ns of listNamespacesSync().filter((n) => belongsTo(n, this.prefix))) deleteNamespaceSync(ns);
  }
}

const liveClusters = new Set<Cluster>();
let hooksInstalled = false;

function onExit(): void {
  for (const c of liveClusters) c.teardownSync();
}

function onSignal(signal: NodeJS.Signals): void {
  const code = signal === 'SIGINT' ? 130 : 143;
  void Promise.allSettled([...liveClusters].map((c) => c.teardown())).then(() => process.exit(code));
}

function updateExitHooks(): void {
  const want = liveClusters.size > 0;
  if (want === hooksInstalled) return;
  hooksInstalled = want;
  if (want) {
    process.on('exit', onExit);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  } else {
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export class ClusterSetupError extends NodemeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.CLUSTER_SETUP, message, options);
  }
}

/** Builds the cluster; on any failure it tears down what was built and rethrows. */
export async function createCluster(spec: ClusterSpec, opts: { prefix: string }): Promise<Cluster> {
  const plan = planCluster(spec, opts.prefix);
  if (process.getuid?.() !== 0) throw new ClusterSetupError(`cluster ${opts.prefix}: network namespaces need root; run the tests as root (uid 0)`);
  const clash = (await listNamespaces()).filter((ns) => belongsTo(ns, opts.prefix));
  if (clash.length) throw new ClusterSetupError(`cluster ${opts.prefix}: namespaces ${clash.join(', ')} already exist; delete them with "node integration/cluster-cli.ts down --prefix ${opts.prefix}"`);
  const cluster = new Cluster(plan);
  liveClusters.add(cluster);
  updateExitHooks();
  try {
    await buildUnderlay(cluster);
    await buildNodes(cluster);
    await Promise.all(cluster.pods.map((pod) => buildPod(cluster, pod)));
    await cluster.syncServices();
  } catch (err) {
    await cluster.teardown();
    throw new ClusterSetupError(`cluster ${opts.prefix}: setup failed: ${(err as Error).message}`, { cause: err });
  }
  log.info('cluster up', { prefix: cluster.prefix, cni: cluster.cni, nodes: cluster.nodes.length, pods: cluster.pods.length, services: cluster.services.length });
  return cluster;
}
