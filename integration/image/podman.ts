// The image on the test cluster: built by `make image` on the base of
// scripts/image-base.ts, and run with podman in place of a mesh process, with
// what the manifests give its container: the command, args, env, security context and
// volume mounts of manifests/ are read and turned into `podman run` flags, so
// the test runs the image as a cluster would, and follows the manifests when
// they change. Only podman: it puts a container into a named network namespace
// (`--network ns:/var/run/netns/<node>`), needs no daemon, and runs as root here.

import { execFile } from 'node:child_process';
import { copyFile, chmod, chown, mkdir, open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import { kustomize, type KubeObject } from '../../manifests/testdata/kustomize.ts';
import { ensureBase } from '../../scripts/image-base.ts';
import type { Cluster } from '../cluster/cluster.ts';
import type { ControlPlaneLaunch, Launcher, NodeLaunch } from '../cluster/mesh.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

/**
 * podman's own settings for this test, for its processes only (never the
 * machine's files): see containers.conf beside this file. A CONTAINERS_CONF of
 * the caller's wins.
 */
export const PODMAN_ENV: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_CONF: process.env.CONTAINERS_CONF ?? fileURLToPath(new URL('./containers.conf', import.meta.url)) };

export class ImageTestError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.IMAGE_TEST, message);
  }
}

export async function podman(args: string[], opts: { allowFailure?: boolean; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('podman', args, { env: PODMAN_ENV, maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
    if (opts.allowFailure && typeof e.code === 'number') return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    throw new ImageTestError(`podman ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}${e.code === 'ENOENT' ? ' (install podman: make system-deps)' : ''}`);
  }
}

/** Fails, with what to do, when podman cannot run a container here. */
export async function checkPodman(): Promise<void> {
  await podman(['info', '--format', '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}']);
}

export interface BuiltImage {
  tag: string;
  base: string;
  baseMs: number;
  buildMs: number;
  bytes: number;
  /** Every image the build made (the stages' and their layers', the tagged one), for removeImage. */
  made: string[];
}

async function imageIds(): Promise<Set<string>> {
  return new Set((await podman(['images', '--all', '--quiet', '--no-trunc'])).stdout.split('\n').filter(Boolean));
}

/**
 * `make image` on the cached Debian base, tagged `tag`; the caller removes it
 * with everything its build made. So every run builds its stages afresh (npm ci
 * included): nothing of one run's sources is left for the next.
 */
export async function buildImage(tag: string): Promise<BuiltImage> {
  let started = Date.now();
  const base = await ensureBase();
  const baseMs = Date.now() - started;
  const before = await imageIds();
  started = Date.now();
  try {
    await run('make', ['--no-print-directory', 'image', `BASE=${base}`, `IMAGE=${tag}`], { cwd: ROOT, env: { ...PODMAN_ENV, ENGINE: 'podman' }, maxBuffer: 64 << 20, timeout: 900_000 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    await removeImage({ tag, made: [...await imageIds()].filter((id) => !before.has(id)) });
    throw new ImageTestError(`make image BASE=${base} IMAGE=${tag} failed: ${e.message}\n${(e.stdout ?? '').slice(-3000)}\n${(e.stderr ?? '').slice(-3000)}`);
  }
  const buildMs = Date.now() - started;
  const bytes = Number((await podman(['image', 'inspect', '--format', '{{.Size}}', tag])).stdout.trim());
  const made = [...await imageIds()].filter((id) => !before.has(id));
  return { tag, base, baseMs, buildMs, bytes, made };
}

/** Removes the tagged image and every image its build made; the cached base stays. */
export async function removeImage(image: { tag: string; made?: string[] }): Promise<void> {
  await podman(['rmi', '--force', '--ignore', image.tag], { allowFailure: true });
  for (const id of [...(image.made ?? [])].reverse()) await podman(['rmi', '--force', '--ignore', id], { allowFailure: true });
}

export async function removeContainer(name: string): Promise<void> {
  await podman(['rm', '--force', '--ignore', '--time', '0', name], { allowFailure: true });
}

/** The container of a workload of manifests/ (kind/name), with its pod's volumes and security context. */
function manifestContainer(kind: string, name: string): { pod: Record<string, any>; container: Record<string, any> } {
  const obj = kustomize(join(ROOT, 'manifests')).find((o: KubeObject) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new ImageTestError(`manifests/ render no ${kind}/${name}`);
  const pod = obj.spec.template.spec as Record<string, any>;
  return { pod, container: pod.containers[0] as Record<string, any> };
}

/** The security context of pod and container as podman flags; a field podman cannot honour as Kubernetes would is an error. */
function securityFlags(pod: Record<string, any>, container: Record<string, any>): { flags: string[]; uid: number; gid: number } {
  const sc = { ...(pod.securityContext ?? {}), ...(container.securityContext ?? {}) } as Record<string, any>;
  if (sc.privileged) throw new ImageTestError('a privileged container is not what the manifests should run');
  const uid = sc.runAsUser as number | undefined;
  const gid = (sc.runAsGroup as number | undefined) ?? uid;
  const flags: string[] = [];
  if (uid !== undefined) flags.push('--user', `${uid}:${gid}`);
  for (const cap of sc.capabilities?.drop ?? []) flags.push('--cap-drop', cap);
  for (const cap of sc.capabilities?.add ?? []) flags.push('--cap-add', cap);
  // Kubernetes mounts nothing writable over a read-only root (podman would put tmpfs on /tmp, /run, /var/tmp).
  if (sc.readOnlyRootFilesystem) flags.push('--read-only', '--read-only-tmpfs=false');
  if (sc.allowPrivilegeEscalation === false) flags.push('--security-opt', 'no-new-privileges');
  // RuntimeDefault is podman's default seccomp profile.
  if (sc.seccompProfile && sc.seccompProfile.type !== 'RuntimeDefault') throw new ImageTestError(`seccompProfile ${sc.seccompProfile.type} is not run by this test`);
  return { flags, uid: uid ?? 65532, gid: gid ?? 65532 };
}

/** `-e` flags for the container's env; fieldRefs as the Downward API would fill them. */
function envFlags(container: Record<string, any>, fields: Record<string, string>): string[] {
  return (container.env ?? []).flatMap((e: Record<string, any>) => {
    const value = e.value ?? fields[e.valueFrom?.fieldRef?.fieldPath];
    if (value === undefined) throw new ImageTestError(`env ${e.name}: no value for ${JSON.stringify(e.valueFrom)}`);
    return ['-e', `${e.name}=${value}`];
  });
}

/**
 * `-v`/`--tmpfs` flags for the container's volume mounts. `sources` gives the
 * host directory (or file) of a volume by name; hostPath volumes are the host's
 * own path, memory-backed emptyDirs a tmpfs.
 */
async function mountFlags(pod: Record<string, any>, container: Record<string, any>, sources: Record<string, string>): Promise<string[]> {
  const flags: string[] = [];
  for (const m of container.volumeMounts ?? []) {
    const volume = (pod.volumes ?? []).find((v: Record<string, any>) => v.name === m.name);
    if (!volume) throw new ImageTestError(`volumeMount ${m.name} names no volume`);
    if (volume.emptyDir?.medium === 'Memory') {
      flags.push('--tmpfs', `${m.mountPath}:rw,size=${String(volume.emptyDir.sizeLimit ?? '16Mi').replace(/i$/, '').toLowerCase()}`);
      continue;
    }
    let source = sources[m.name];
    if (volume.hostPath) {
      source = volume.hostPath.path as string;
      if (volume.hostPath.type === 'FileOrCreate') await (await open(source, 'a')).close();
      if (volume.hostPath.type === 'DirectoryOrCreate') await mkdir(source, { recursive: true });
    }
    if (source === undefined) throw new ImageTestError(`volume ${m.name}: the test gives it no host directory`);
    const options = [m.readOnly ? 'ro' : 'rw'];
    // HostToContainer: mounts made on the host later (new pods' namespaces) appear inside.
    if (m.mountPropagation === 'HostToContainer') options.push('rslave');
    else if (m.mountPropagation && m.mountPropagation !== 'None') throw new ImageTestError(`mountPropagation ${m.mountPropagation} is not run by this test`);
    flags.push('-v', `${source}:${m.mountPath}:${options.join(',')}`);
  }
  return flags;
}

/** A flag's value in `--flag=value` args. */
function flagValue(args: string[], flag: string): string | undefined {
  return args.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
}

/** A directory holding copies of files under the names a volume gives them, owned by the container's user. */
async function volumeDir(dir: string, files: Record<string, string>, uid: number, gid: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [name, from] of Object.entries(files)) {
    await copyFile(from, join(dir, name));
    await chown(join(dir, name), uid, gid);
    await chmod(join(dir, name), 0o400);
  }
  await chown(dir, uid, gid);
  return dir;
}

/**
 * Runs `nodemesh node` from the image as manifests/node-daemonset.yaml runs it,
 * in the node's network namespace (hostNetwork), with the mesh's token, trust
 * bundle and state dir mounted where the DaemonSet mounts them. The only flags
 * beyond the manifest's: the control plane's address on the test cluster, and
 * where the test cluster's pod namespaces are named.
 */
export function nodeFromImage(cluster: Cluster, image: string, containerName: string): Launcher<NodeLaunch> {
  return async (launch) => {
    const { pod, container } = manifestContainer('DaemonSet', 'nodemesh-node');
    const { flags: security, uid, gid } = securityFlags(pod, container);
    const args = (container.args as string[]).map((a) => a.replaceAll('$(NODE_NAME)', launch.name))
      .map((a) => (a.startsWith('--controlplane=') ? `--controlplane=${launch.controlPlane}` : a));
    const tokenPath = flagValue(args, 'token-file')!;
    const caPath = flagValue(args, 'ca-file')!;
    const pods = join(launch.stateDir, '..', `${launch.name}-volumes`);
    const tokenVolume = (pod.volumes as Record<string, any>[]).find((v) => v.projected)!;
    const bundleVolume = (pod.volumes as Record<string, any>[]).find((v) => v.configMap)!;
    const sources: Record<string, string> = {
      [tokenVolume.name]: await volumeDir(join(pods, 'token'), { [tokenPath.split('/').at(-1)!]: launch.tokenFile }, uid, gid),
      [bundleVolume.name]: await volumeDir(join(pods, 'trust-bundle'), { [caPath.split('/').at(-1)!]: launch.caFile }, uid, gid),
      state: launch.stateDir,
    };
    await chown(launch.stateDir, uid, gid);
    const argv = ['podman', 'run', '--rm', '--pull=never', '--name', containerName,
      '--network', `ns:/var/run/netns/${launch.netns}`,
      ...security,
      ...envFlags(container, { 'spec.nodeName': launch.name, 'metadata.namespace': 'nodemesh-system' }),
      ...await mountFlags(pod, container, sources),
      // A container's `command` replaces the image's entrypoint, as in Kubernetes.
      ...(container.command ? ['--entrypoint', JSON.stringify(container.command)] : []),
      image, ...args, '--admin-addr', launch.adminAddr, '--pod-netns-prefix', launch.podNetnsPrefix];
    return cluster.spawnOnHost(argv, { env: PODMAN_ENV, logFile: launch.logFile });
  };
}

/**
 * Runs `nodemesh controlplane` from the image as manifests/controlplane-deployment.yaml
 * runs it (its user, read-only root, no capabilities), in the control plane's
 * namespace, on the file source: the config dir and node tokens mounted read-only,
 * the CA dir writable, both owned by the image's user.
 */
export function controlPlaneFromImage(cluster: Cluster, image: string, containerName: string): Launcher<ControlPlaneLaunch> {
  return async (launch) => {
    const { pod, container } = manifestContainer('Deployment', 'nodemesh-controlplane');
    const { flags: security, uid, gid } = securityFlags(pod, container);
    const args = (container.args as string[]).filter((a) => !a.startsWith('--source=') && !a.startsWith('--listen='));
    // The image's user reads the config (a directory the test made, root's, 0700).
    await chmodTree(launch.configDir);
    const tokens = await volumeDir(join(launch.caDir, '..', 'controlplane-tokens'), { 'node-tokens': launch.nodeTokens }, uid, gid);
    await mkdir(launch.caDir, { recursive: true });
    await chown(launch.caDir, uid, gid);
    const argv = ['podman', 'run', '--rm', '--pull=never', '--name', containerName,
      '--network', `ns:/var/run/netns/${launch.netns}`,
      ...security,
      ...envFlags(container, { 'metadata.namespace': 'nodemesh-system' }),
      '-v', `${launch.configDir}:/etc/nodemesh/config:ro`,
      '-v', `${tokens}:/etc/nodemesh/node-tokens:ro`,
      '-v', `${launch.caDir}:/var/lib/nodemesh/ca:rw`,
      image, ...args, '--source', '/etc/nodemesh/config', '--listen', launch.listen,
      '--ca-dir', '/var/lib/nodemesh/ca', '--node-tokens', '/etc/nodemesh/node-tokens/node-tokens'];
    return cluster.spawnOnHost(argv, { env: PODMAN_ENV, logFile: launch.logFile });
  };
}

async function chmodTree(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir)) {
    const path = join(dir, entry);
    if ((await stat(path)).isDirectory()) await chmodTree(path);
    else await chmod(path, 0o644);
  }
}
