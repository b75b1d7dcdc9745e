// Hands back the file pages only start-up used. A node process maps the node
// executable (V8, OpenSSL, ICU data, the parser and compilers that load our
// bundle) and touches most of it while starting; those pages stay resident and
// count in its RSS (55 MiB of a node's 102 with 1,000 tunnels in the bench)
// though the running proxy uses a fraction of them. Once the node is ready,
// madvise(MADV_DONTNEED) unmaps the clean pages of every read-only file mapping:
// the page cache keeps them, and the ones still in use fault back in (minor
// faults) on their next touch. Only mappings that cannot hold data of ours are
// touched: backed by a file, not writable, with no private (copied-on-write)
// page, so dropping a page can only ever bring back the same bytes. A file
// written moments ago (an executable just installed) is skipped until the
// kernel has written it back: its smaps counts those pages dirty.

import { readFileSync } from 'node:fs';
import koffi from 'koffi';

const MADV_DONTNEED = 4;
const libc = koffi.load('libc.so.6');
const madvise = libc.func('int madvise(uintptr_t addr, size_t length, int advice)');

export interface FileMapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
  /** kB fields of /proc/<pid>/smaps (Rss, Private_Dirty, Anonymous, ...). */
  kb: Record<string, number>;
}

/** The mappings of /proc/<pid>/smaps text. */
export function parseSmaps(text: string): FileMapping[] {
  const mappings: FileMapping[] = [];
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      mappings.push({ start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), perms: head[3]!, path: head[4]!, kb: {} });
      continue;
    }
    const field = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (field && mappings.length) mappings[mappings.length - 1]!.kb[field[1]!] = Number(field[2]);
  }
  return mappings;
}

/** Whether dropping the mapping's resident pages can only bring back the file's bytes. */
export function droppable(m: FileMapping): boolean {
  return m.path.startsWith('/') && !m.path.endsWith(' (deleted)') && m.perms[1] !== 'w' &&
    (m.kb.Private_Dirty ?? 1) === 0 && (m.kb.Shared_Dirty ?? 1) === 0 && (m.kb.Anonymous ?? 1) === 0 && (m.kb.Rss ?? 0) > 0;
}

/** Drops this process's clean read-only file pages; returns how many MiB were resident in them. */
export function releaseStartUpPages(): { mappings: number; mib: number } {
  let mappings = 0;
  let kb = 0;
  for (const m of parseSmaps(readFileSync('/proc/self/smaps', 'utf8'))) {
    if (!droppable(m)) continue;
    if (madvise(m.start, Number(m.end - m.start), MADV_DONTNEED) !== 0) continue;
    mappings++;
    kb += m.kb.Rss!;
  }
  return { mappings, mib: Math.round(kb / 102.4) / 10 };
}
