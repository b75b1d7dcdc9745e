// Finding the network namespace of each local pod, for in-pod capture.
// containerd and CRI-O bind-mount every pod sandbox's namespace under
// /var/run/netns (so does `ip netns`, which the test cluster uses); the pod is
// recognised by its IP among the namespace's addresses. A namespace is read
// once and remembered by its inode, so a reconcile costs one stat per
// namespace; a recreated pod, even with the same name, is a new inode.

import { statSync } from 'node:fs';
import { NETNS_DIR, ipv4AddressesIn, listNetns } from '../daemon/netns.ts';
import { logger } from '../core/log.ts';

const log = logger('enrollment');

export class PodNetnsFinder {
  readonly #dir: string;
  readonly #prefix: string;
  /** path -> what it held when read. */
  readonly #seen = new Map<string, { inode: number; ips: string[] }>();
  readonly #home: number;

  /** `prefix`: only namespaces whose names start with it (the test cluster's own, beside other runs'). */
  constructor(dir = NETNS_DIR, prefix = '') {
    this.#dir = dir;
    this.#prefix = prefix;
    this.#home = statSync('/proc/self/ns/net').ino;
  }

  /** The namespace of each of `ips` that has one here; IPs with none are left out. */
  find(ips: readonly string[]): Map<string, string> {
    const wanted = new Set(ips);
    const found = new Map<string, string>();
    const present = new Set<string>();
    for (const { path, inode } of listNetns(this.#dir, this.#prefix)) {
      present.add(path);
      if (inode === this.#home) continue;
      let entry = this.#seen.get(path);
      // A namespace without an address yet is read again: the CNI may not have configured it.
      if (!entry || entry.inode !== inode || entry.ips.length === 0) {
        try {
          entry = { inode, ips: ipv4AddressesIn(path) };
        } catch (err) {
          log.warn('cannot read a network namespace; pods in it are captured from the node instead', { netns: path, error: (err as Error).message });
          continue;
        }
        this.#seen.set(path, entry);
      }
      for (const ip of entry.ips) {
        if (!wanted.has(ip)) continue;
        if (found.has(ip)) {
          log.warn('two network namespaces hold the same pod IP; using the first', { ip, first: found.get(ip), second: path });
          continue;
        }
        found.set(ip, path);
      }
    }
    for (const path of this.#seen.keys()) if (!present.has(path)) this.#seen.delete(path);
    return found;
  }
}
