// How much of the time the node proxy's tasks waited for a CPU, from Linux
// pressure stall information (PSI): the `some` line's total (µs during which at
// least one task was runnable and not running), read from the proxy's own cgroup
// (cpu.pressure, what a container with a CPU limit or on a busy node sees), else
// the whole machine's (/proc/pressure/cpu). The fair share reads it each tick:
// an event loop that is not behind by itself can still be starved of the CPU by
// the work its sources cause elsewhere — in other processes, or other threads.

import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const SOME_TOTAL = /^some .*total=(\d+)/m;

export class CpuPressure {
  readonly #fd: number;
  readonly #buffer = Buffer.alloc(256);
  #lastTotal = 0;
  #lastAt = performance.now();

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** The first of `paths` that reads as PSI: the proxy's cgroup's, else the machine's; undefined on a kernel without PSI. */
  static open(paths: (string | undefined)[] = [ownCgroupFile(), '/proc/pressure/cpu']): CpuPressure | undefined {
    for (const path of paths) {
      if (!path) continue;
      let fd: number | undefined;
      try {
        fd = openSync(path, 'r');
        const pressure = new CpuPressure(fd);
        const total = pressure.#readTotal();
        if (total === undefined) throw new Error('no some line');
        pressure.#lastTotal = total;
        return pressure;
      } catch {
        if (fd !== undefined) closeSync(fd);
      }
    }
    return undefined;
  }

  /** The share (0-1) of the time since the previous sample during which some task waited for a CPU. */
  sample(): number {
    const total = this.#readTotal();
    const now = performance.now();
    const elapsedUs = (now - this.#lastAt) * 1000;
    if (total === undefined || elapsedUs <= 0) return 0;
    const share = (total - this.#lastTotal) / elapsedUs;
    this.#lastTotal = total;
    this.#lastAt = now;
    return Math.min(1, Math.max(0, share));
  }

  close(): void {
    closeSync(this.#fd);
  }

  #readTotal(): number | undefined {
    const n = readSync(this.#fd, this.#buffer, 0, this.#buffer.length, 0);
    const match = SOME_TOTAL.exec(this.#buffer.toString('latin1', 0, n));
    return match ? Number(match[1]) : undefined;
  }
}

/**
 * cgroup v2: /proc/self/cgroup's "0::<path>" under the cgroup2 mount. In a
 * container with its own cgroup namespace the path is "/" and the mount is its
 * cgroup.
 */
function ownCgroupFile(): string | undefined {
  try {
    const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
    const mount = cgroup2Mount();
    return line && mount ? `${mount}${line.slice(3).replace(/\/$/, '')}/cpu.pressure` : undefined;
  } catch {
    return undefined;
  }
}

/** Where this process sees cgroup2 mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host). */
export function cgroup2Mount(): string | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[fields.indexOf('-') + 1] === 'cgroup2') return fields[4];
  }
  return undefined;
}
