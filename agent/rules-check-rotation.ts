// Which enrolled pods' in-pod rules a reconcile reads back. A pod this process
// has not applied yet, or whose namespace or node addresses changed, is applied
// at once. The others only on a periodic resync, a slice of them each time, the
// longest unchecked first: every pod is read back once per `rounds` resyncs. Each
// check is two commands run inside the pod's namespace; checking every pod every
// minute cost a node of 50 pods 0.5 s of the agent's CPU and 0.7 s of its
// commands' in one burst (in the bench, where both nodes share one CPU, the
// latency runs that overlapped it had p50 134-210 ms instead of 0.5).

export class RulesCheckRotation {
  readonly #rounds: number;
  /** Pod IP -> what its rules were applied for, and when (a counter: only the order matters). */
  readonly #checked = new Map<string, { key: string; at: number }>();
  #clock = 0;

  constructor(rounds: number) {
    this.#rounds = rounds;
  }

  /**
   * The pods of `pods` (IP -> what their rules depend on: namespace, node
   * addresses) whose rules to apply now; forgets the pods not among them.
   */
  due(pods: ReadonlyMap<string, string>, resync: boolean): Set<string> {
    for (const ip of this.#checked.keys()) if (!pods.has(ip)) this.#checked.delete(ip);
    const due = new Set<string>();
    const current: { ip: string; at: number }[] = [];
    for (const [ip, key] of pods) {
      const checked = this.#checked.get(ip);
      if (checked?.key === key) current.push({ ip, at: checked.at });
      else due.add(ip);
    }
    if (resync) {
      current.sort((a, b) => a.at - b.at);
      for (const { ip } of current.slice(0, Math.ceil(current.length / this.#rounds))) due.add(ip);
    }
    return due;
  }

  /** The pod's rules were applied (or found right) for `key`. */
  checked(ip: string, key: string): void {
    this.#checked.set(ip, { key, at: ++this.#clock });
  }

  /** The pod's rules could not be applied: due at the next reconcile. */
  forget(ip: string): void {
    this.#checked.delete(ip);
  }
}
