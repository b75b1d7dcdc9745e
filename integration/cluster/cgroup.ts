// A node's daemon in a cgroup of its own, as a DaemonSet pod's container is on a
// real node: the CPU pressure its fair share reads (daemon/cpu-pressure.ts) is
// then that node's, not the whole machine's with the load generators in it.
// Under the host's cgroup2 mount (cgroup.procs written before the daemon
// starts); inside the node's network namespace, where `ip netns exec` mounts a
// fresh /sys, cgroup2 is mounted at /sys/fs/cgroup again, as a container
// runtime does. A host without a writable cgroup2 mount runs the daemons in
// the harness's own cgroup (the daemon then reads the machine's pressure).

import { mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { logger } from '../../core/log.ts';
import { cgroup2Mount } from '../../daemon/cpu-pressure.ts';

const log = logger('cluster');

/** Creates `<mount>/<name>`; undefined (said once) when the host has none to create it in. */
export function createCgroup(name: string): string | undefined {
  const mount = cgroup2Mount();
  if (!mount) return warnOnce('no cgroup2 mount');
  const dir = join(mount, name);
  try {
    mkdirSync(dir, { recursive: true });
    return dir;
  } catch (err) {
    return warnOnce((err as Error).message);
  }
}

/**
 * `argv` run inside `netns`, joined to the cgroup `dir` before it starts, with
 * cgroup2 at /sys/fs/cgroup inside (host namespaces otherwise: run on the host).
 */
export function inCgroup(dir: string, netns: string, argv: string[]): string[] {
  return [
    'sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir,
    'ip', 'netns', 'exec', netns,
    'sh', '-c', 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"', 'sh',
    ...argv,
  ];
}

/** Removes cgroups whose processes have exited (a cgroup with a live process stays, and is said). */
export function removeCgroups(dirs: Iterable<string>): void {
  for (const dir of dirs) {
    try {
      rmdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('cannot remove a node cgroup', { cgroup: dir, error: (err as Error).message });
    }
  }
}

/** The cgroups under the cgroup2 mount whose names match `pattern` (stale clusters' leftovers). */
export function cgroupsMatching(pattern: RegExp): string[] {
  const mount = cgroup2Mount();
  if (!mount) return [];
  return readdirSync(mount, { withFileTypes: true }).filter((e) => e.isDirectory() && pattern.test(e.name)).map((e) => join(mount, e.name));
}

let warned = false;
function warnOnce(why: string): undefined {
  if (!warned) log.warn('node daemons run in the harness\'s cgroup: their fair share reads the whole machine\'s CPU pressure', { why });
  warned = true;
  return undefined;
}
