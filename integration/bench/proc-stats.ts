// What a daemon process costs, read from /proc: CPU seconds (user + system, all
// threads) and resident memory, current and peak (VmHWM).

import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function statusKib(pid: number, field: 'VmHWM' | 'VmRSS' | 'RssAnon' | 'RssFile'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) : 0;
}

export function peakRssMib(pid: number): number {
  return statusKib(pid, 'VmHWM') / 1024;
}

export function rssMib(pid: number): number {
  return statusKib(pid, 'VmRSS') / 1024;
}

/**
 * Resident memory split: anonymous (the process's own heap and buffers) and
 * file-backed (mostly the node executable's code, shared with every other
 * process running the same binary).
 */
export function rssSplitMib(pid: number): { anon: number; file: number } {
  return { anon: statusKib(pid, 'RssAnon') / 1024, file: statusKib(pid, 'RssFile') / 1024 };
}

/** A process and its descendants (nginx: master and workers). */
export function processTree(pid: number): number[] {
  const out = [pid];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const task of tasks) {
    const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    for (const child of children ? children.split(' ') : []) out.push(...processTree(Number(child)));
  }
  return out;
}

/** Pins every thread of a process to one CPU list (e.g. "1"); threads made later inherit it. */
export function pin(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}
