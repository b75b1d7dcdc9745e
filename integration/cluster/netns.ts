// Network namespaces and the commands that manage them. Namespace names start
// with a prefix; a run's prefix embeds its pid (see `runPrefix`) so a later run
// can tell the leftovers of a dead run from a live one.

import { execFile, execFileSync } from 'node:child_process';
import { basename } from 'node:path';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import { cgroupsMatching, removeCgroups } from './cgroup.ts';

export class ClusterCommandError extends NodemeshError {
  readonly argv: string[];
  readonly stderr: string;
  constructor(argv: string[], detail: string, stderr: string) {
    super(ErrorCode.CLUSTER_COMMAND, `${argv.join(' ')}: ${detail}${stderr ? `: ${stderr.trim()}` : ''}`);
    this.argv = argv;
    this.stderr = stderr;
  }
}

/** Runs a short command (no tracking: it must finish on its own); rejects when it fails. */
export function run(argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(argv[0]!, argv.slice(1), { timeout: opts.timeoutMs ?? 30_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException & { code?: unknown }).code;
        reject(new ClusterCommandError(argv, typeof code === 'number' ? `exited with status ${code}` : err.message, stderr));
      } else {
        resolve(stdout);
      }
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

function runSyncQuiet(argv: string[]): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
  } catch {
    return '';
  }
}

/** Names of all network namespaces of the machine. */
export async function listNamespaces(): Promise<string[]> {
  return parseNetnsList(await run(['ip', 'netns', 'list']));
}

function parseNetnsList(out: string): string[] {
  // Lines look like "name" or "name (id: 3)".
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
}

export function belongsTo(netns: string, prefix: string): boolean {
  return netns.startsWith(`${prefix}-`);
}

/** The pids of processes living in a namespace (all of them were started by the cluster that owns it). */
async function pidsIn(netns: string): Promise<number[]> {
  const out = await run(['ip', 'netns', 'pids', netns]).catch(() => '');
  return out.split(/\s+/).filter(Boolean).map(Number);
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** Deletes a namespace after killing what still runs in it; with it go its veths, routes and rules. */
export async function deleteNamespace(netns: string): Promise<void> {
  killPids(await pidsIn(netns));
  await run(['ip', 'netns', 'del', netns]).catch((err: ClusterCommandError) => {
    if (!/No such file|not found|Invalid/i.test(err.stderr)) throw err;
  });
}

/** The same, synchronously, for the process 'exit' hook. */
export function deleteNamespaceSync(netns: string): void {
  killPids(runSyncQuiet(['ip', 'netns', 'pids', netns]).split(/\s+/).filter(Boolean).map(Number));
  runSyncQuiet(['ip', 'netns', 'del', netns]);
}

export function listNamespacesSync(): string[] {
  return parseNetnsList(runSyncQuiet(['ip', 'netns', 'list']));
}

/** Deletes every namespace of a prefix, pods first (so no veth outlives its peer's namespace). */
export async function deletePrefix(prefix: string): Promise<string[]> {
  const mine = (await listNamespaces()).filter((ns) => belongsTo(ns, prefix));
  const order = (ns: string) => (ns.includes('-pod-') ? 0 : ns.endsWith('-ul') ? 2 : 1);
  mine.sort((a, b) => order(a) - order(b));
  for (const ns of mine) await deleteNamespace(ns);
  return mine;
}

/** A prefix unique to this process: `<base><pid>`, with an optional letter tag for several clusters at once. */
export function runPrefix(base: string, tag = ''): string {
  if (!/^[a-z]*$/.test(tag)) throw new NodemeshError(ErrorCode.CLUSTER_PREFIX, `run prefix tag ${JSON.stringify(tag)} must be lower-case letters`);
  return `${base}${process.pid}${tag}`;
}

/** Whether a process runs (EPERM: it does, under another user). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Deletes the namespaces of runs (`runPrefix(base)`) whose process is gone; returns their names. */
export async function sweepStale(base: string): Promise<string[]> {
  const pattern = new RegExp(`^${base}(\\d+)[a-z]*-`);
  const stale = new Set<string>();
  for (const ns of await listNamespaces()) {
    const m = pattern.exec(ns);
    if (m && !alive(Number(m[1]))) stale.add(ns.slice(0, ns.indexOf('-')));
  }
  const deleted: string[] = [];
  for (const prefix of stale) deleted.push(...(await deletePrefix(prefix)));
  // Node cgroups (cgroup.ts) of clusters whose process died without its teardown.
  removeCgroups(cgroupsMatching(pattern).filter((dir) => !alive(Number(pattern.exec(basename(dir))![1]))));
  return deleted;
}
