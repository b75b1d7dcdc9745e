// nodemesh on a test cluster: the control plane in the control-plane namespace,
// one `nodemesh node` per node namespace, each started as the real CLI and waited
// for until it reports ready. Their logs go to files whose tails end up in
// failure messages.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import type { Cluster } from './cluster.ts';
import type { ClusterProcess } from './processes.ts';
import { NODE_PROCESS_ENV, NODE_V8_FLAGS } from '../../agent/v8-flags.ts';
import { nodemeshBinary } from './nodemesh-binary.ts';

export const CONTROL_PLANE_PORT = 15010;
export const ADMIN_ADDR = '127.0.0.1:15000';
export const READY_URL = 'http://127.0.0.1:15021/healthz/ready';

/** Data-plane workers per node unless MeshOptions.workers says (NODEMESH_E2E_WORKERS, else 1). */
export const DEFAULT_WORKERS = Number(process.env.NODEMESH_E2E_WORKERS ?? 1);

export interface MeshOptions {
  /** The YAML the control plane reads (see generateConfigDir). */
  configDir: string;
  /** Tokens, CA, node state and logs; default a temporary directory removed by stop(). */
  workDir?: string;
  /** Extra environment for every nodemesh process (e.g. NODEMESH_DEBUG). */
  env?: Record<string, string>;
  /** Per process; default 30 s. */
  readyTimeoutMs?: number;
  /** Extra flags for every `nodemesh node` (e.g. a short --drain-deadline-ms). */
  nodeArgs?: string[];
  /**
   * Data-plane workers per node (`--workers`); default NODEMESH_E2E_WORKERS, else 1:
   * the suites' exact per-pod limits and counts stay exact, and two cores are not
   * shared by six data-plane threads. The workers suite runs 2, the image suite auto.
   */
  workers?: number;
  /** How to start the control plane or a node instead of `node dist/nodemesh.mjs` in its namespace (e.g. from the image). */
  launchers?: { controlPlane?: Launcher<ControlPlaneLaunch>; nodes?: Record<string, Launcher<NodeLaunch>> };
}

/** What a process of the mesh is started with: the CLI's arguments after `nodemesh`, the files they name, where it logs. */
interface Launch {
  netns: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  logFile: string;
}

export interface ControlPlaneLaunch extends Launch {
  listen: string;
  configDir: string;
  caDir: string;
  nodeTokens: string;
}

export interface NodeLaunch extends Launch {
  name: string;
  controlPlane: string;
  tokenFile: string;
  caFile: string;
  stateDir: string;
  adminAddr: string;
  podNetnsPrefix: string;
}

export type Launcher<L extends Launch> = (launch: L) => ClusterProcess | Promise<ClusterProcess>;

export class MeshStartError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.MESH_START, message);
  }
}

export class Mesh {
  readonly cluster: Cluster;
  readonly workDir: string;
  readonly caDir: string;
  readonly caFile: string;
  readonly #opts: MeshOptions;
  readonly #ownsWorkDir: boolean;
  readonly #tokens = new Map<string, string>();
  controlPlane: ClusterProcess | undefined;
  readonly nodes = new Map<string, ClusterProcess>();
  #stopped: Promise<void> | undefined;

  constructor(cluster: Cluster, workDir: string, ownsWorkDir: boolean, opts: MeshOptions) {
    this.cluster = cluster;
    this.workDir = workDir;
    this.#ownsWorkDir = ownsWorkDir;
    this.#opts = opts;
    this.caDir = join(workDir, 'ca');
    this.caFile = join(this.caDir, 'ca-cert.pem');
    for (const node of cluster.nodes) this.#tokens.set(node.name, randomBytes(24).toString('hex'));
  }

  get controlPlaneAddress(): string {
    return `${this.cluster.controlPlane.ip}:${CONTROL_PLANE_PORT}`;
  }

  tokenFile(node: string): string {
    return join(this.workDir, 'tokens', node);
  }

  logFile(name: string): string {
    return join(this.workDir, 'logs', `${name}.log`);
  }

  stateDir(node: string): string {
    return join(this.workDir, 'state', node);
  }

  async writeTokens(): Promise<void> {
    await mkdir(join(this.workDir, 'tokens'), { recursive: true });
    await mkdir(join(this.workDir, 'logs'), { recursive: true });
    const lines = [...this.#tokens].map(([node, token]) => `${node}: ${token}`);
    await writeFile(join(this.workDir, 'node-tokens'), `# node-name: token\n${lines.join('\n')}\n`, { mode: 0o600 });
    for (const [node, token] of this.#tokens) await writeFile(this.tokenFile(node), `${token}\n`, { mode: 0o600 });
  }

  #env(): NodeJS.ProcessEnv {
    return { ...process.env, ...this.#opts.env };
  }

  async startControlPlane(): Promise<ClusterProcess> {
    const nodeTokens = join(this.workDir, 'node-tokens');
    const launch: ControlPlaneLaunch = {
      netns: this.cluster.controlPlane.netns, listen: this.controlPlaneAddress, configDir: this.#opts.configDir, caDir: this.caDir, nodeTokens,
      args: ['controlplane', '--source', this.#opts.configDir, '--listen', this.controlPlaneAddress, '--ca-dir', this.caDir, '--node-tokens', nodeTokens],
      env: this.#env(), logFile: this.logFile('controlplane'),
    };
    const launcher = this.#opts.launchers?.controlPlane;
    const cp = launcher ? await launcher(launch) : this.cluster.spawn(launch.netns, [process.execPath, await nodemeshBinary(), ...launch.args], { env: launch.env, logFile: launch.logFile });
    this.controlPlane = cp;
    await this.#until(cp, 'controlplane', 'its CA file ' + this.caFile, async () => existsSync(this.caFile));
    return cp;
  }

  /** Starts (or restarts) the agent of one node and waits until /healthz/ready answers 200. */
  async startNode(name: string): Promise<ClusterProcess> {
    await this.nodes.get(name)?.stop();
    const proc = await this.#spawnNode(name);
    await this.#until(proc, `node ${name}`, `${READY_URL} to answer 200`, () => this.isReady(name));
    return proc;
  }

  /**
   * Starts a second agent on a node beside the running one, as a rolling update's
   * surge pod does, and waits until it listens in the node's namespace and in
   * every pod namespace the running one serves (SO_REUSEPORT: two listeners per
   * port). The node's entry becomes the successor; the old process is returned,
   * still running, for the caller to stop.
   */
  async startSuccessor(name: string): Promise<{ old: ClusterProcess; successor: ClusterProcess }> {
    const old = this.nodes.get(name);
    if (!old) throw new MeshStartError(`node ${name} runs no agent to succeed`);
    const node = this.cluster.node(name);
    const namespaces = [node.netns, ...this.cluster.pods.filter((p) => p.node === name).map((p) => p.netns)];
    const listeners = async (netns: string, port: number) => (await this.cluster.exec(netns, ['ss', '-Hltn', `sport = :${port}`])).stdout.split('\n').filter((l) => l.trim()).length;
    // The old daemon's own count first: one listener per data-plane worker (a pod the node
    // does not capture has none: nothing to hand over there).
    const held: { netns: string; port: number; count: number }[] = [];
    for (const netns of namespaces) {
      for (const port of [15001, 15008]) {
        const count = await listeners(netns, port);
        if (count > 0) held.push({ netns, port, count });
      }
    }
    const successor = await this.#spawnNode(name);
    // Regression (routed pass, 2 workers): "two listeners" was met by the old daemon's own two
    // workers, so the old one was stopped before the successor bound, gave up waiting for it
    // after its 750 ms and closed: 30 ms of refused connections on a loaded machine.
    await this.#until(successor, `node ${name}'s successor`, 'more listeners on 15001 and 15008 than the old daemon holds, in each namespace it serves', async () => {
      for (const { netns, port, count } of held) if ((await listeners(netns, port)) <= count) return false;
      return true;
    });
    return { old, successor };
  }

  async #spawnNode(name: string): Promise<ClusterProcess> {
    const node = this.cluster.node(name);
    await mkdir(this.stateDir(name), { recursive: true });
    const launch: NodeLaunch = {
      name, netns: node.netns, controlPlane: this.controlPlaneAddress, tokenFile: this.tokenFile(name), caFile: this.caFile,
      stateDir: this.stateDir(name), adminAddr: ADMIN_ADDR, podNetnsPrefix: `${node.netns}-pod-`,
      env: { ...NODE_PROCESS_ENV, ...this.#env() }, logFile: this.logFile(`node-${name}`), args: ['node',
      '--node-name', name,
      '--controlplane', this.controlPlaneAddress,
      '--token-file', this.tokenFile(name),
      '--ca-file', this.caFile,
      '--state-dir', this.stateDir(name),
      '--cert-dir', join(this.stateDir(name), 'certs'),
      '--admin-addr', ADMIN_ADDR,
      '--pod-netns-prefix', `${node.netns}-pod-`,
      '--workers', String(this.#opts.workers ?? DEFAULT_WORKERS),
      ...(this.#opts.nodeArgs ?? []),
      ],
    };
    const launcher = this.#opts.launchers?.nodes?.[name];
    const proc = launcher ? await launcher(launch) : this.cluster.spawnNode(node.netns, name, [process.execPath, ...NODE_V8_FLAGS, await nodemeshBinary(), ...launch.args], { env: launch.env, logFile: launch.logFile });
    this.nodes.set(name, proc);
    return proc;
  }

  async stopNode(name: string): Promise<void> {
    await this.nodes.get(name)?.stop();
    this.nodes.delete(name);
  }

  async isReady(name: string): Promise<boolean> {
    const res = await this.cluster.exec(this.cluster.node(name).netns, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', READY_URL], { allowFailure: true });
    return res.stdout.trim() === '200';
  }

  async #until(proc: ClusterProcess, what: string, condition: string, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + (this.#opts.readyTimeoutMs ?? 30_000);
    while (!(await check())) {
      if (proc.exitStatus) throw new MeshStartError(`${what} exited (${proc.exitStatus.code ?? proc.exitStatus.signal}) before ${condition}\n${await this.logs()}`);
      if (Date.now() > deadline) throw new MeshStartError(`${what} did not get ${condition} within ${this.#opts.readyTimeoutMs ?? 30_000} ms\n${await this.logs()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The tail of every process's log, for a failure message. */
  async logs(chars = 3000): Promise<string> {
    const names = ['controlplane', ...this.cluster.nodes.map((n) => `node-${n.name}`)];
    const parts: string[] = [];
    for (const name of names) {
      const text = await readFile(this.logFile(name), 'utf8').catch(() => undefined);
      if (text !== undefined) parts.push(`--- ${name} (${this.logFile(name)}) ---\n${text.slice(-chars)}`);
    }
    return parts.join('\n');
  }

  /** Stops every nodemesh process; removes the work directory when the mesh made it. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      await Promise.all([...this.nodes.values()].map((p) => p.stop()));
      this.nodes.clear();
      await this.controlPlane?.stop();
      if (this.#ownsWorkDir) await rm(this.workDir, { recursive: true, force: true });
    })();
    return this.#stopped;
  }
}

/**
 * Starts the control plane and every node agent of the cluster and waits until
 * all are ready. On failure it stops what it started and throws with their logs.
 * The cluster's teardown stops the mesh too.
 */
export async function startMesh(cluster: Cluster, opts: MeshOptions): Promise<Mesh> {
  const owns = opts.workDir === undefined;
  const workDir = opts.workDir ?? (await mkdtemp(join(tmpdir(), `nodemesh-${cluster.prefix}-`)));
  const mesh = new Mesh(cluster, workDir, owns, opts);
  cluster.onTeardown(() => mesh.stop());
  try {
    await mesh.writeTokens();
    await mesh.startControlPlane();
    await Promise.all(cluster.nodes.map((n) => mesh.startNode(n.name)));
  } catch (err) {
    await mesh.stop();
    throw err;
  }
  return mesh;
}
