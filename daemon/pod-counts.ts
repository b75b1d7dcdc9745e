// Per source pod counts shared by the node's data-plane workers, so a pod's
// limits (source-limits.ts) hold for the node, not for each worker. The counts
// live in one SharedArrayBuffer: a slot per local pod, and in each slot a column
// per worker that only that worker writes (Atomics), so a worker that dies
// takes nothing of the others' with it: its column is zeroed before it starts
// again. A check reads the slot's columns and adds them; two workers admitting
// the same pod at the same instant can pass one each over the limit, which is
// the price of not locking on every accept.
//
// The main thread assigns the slots (PodSlotAllocator, from the local
// workloads after every config update) and posts each assignment to the
// workers before the update that makes the pod a source, so a worker knows
// the slot of every pod it can see. A pod without a slot (more local pods than
// MAX_POD_SLOTS) is counted by each worker alone.

export const MAX_POD_SLOTS = 1024;
const KINDS = 2;
export type CountKind = 0 | 1;
export const CONNECTIONS: CountKind = 0;
export const REQUESTS: CountKind = 1;

/** What the main thread posts after a config update: slots given to new local pods, and slots given back. */
export interface SlotChanges {
  assigned: [uid: string, slot: number][];
  freed: string[];
}

export class SharedPodCounts {
  readonly buffer: SharedArrayBuffer;
  readonly #counts: Int32Array;
  readonly #workers: number;
  readonly #worker: number;
  readonly #slots = new Map<string, number>();

  constructor(buffer: SharedArrayBuffer, workers: number, worker: number, slots: Iterable<[string, number]> = []) {
    this.buffer = buffer;
    this.#counts = new Int32Array(buffer);
    this.#workers = workers;
    this.#worker = worker;
    for (const [uid, slot] of slots) this.#slots.set(uid, slot);
  }

  static allocate(workers: number): SharedArrayBuffer {
    return new SharedArrayBuffer(MAX_POD_SLOTS * KINDS * workers * Int32Array.BYTES_PER_ELEMENT);
  }

  apply(changes: SlotChanges): void {
    for (const uid of changes.freed) this.#slots.delete(uid);
    for (const [uid, slot] of changes.assigned) this.#slots.set(uid, slot);
  }

  slotOf(uid: string): number | undefined {
    return this.#slots.get(uid);
  }

  slots(): [string, number][] {
    return [...this.#slots];
  }

  /** The pod's count of `kind` over every worker. */
  total(slot: number, kind: CountKind): number {
    const base = (slot * KINDS + kind) * this.#workers;
    let sum = 0;
    for (let w = 0; w < this.#workers; w++) sum += Atomics.load(this.#counts, base + w);
    return sum;
  }

  /** Changes this worker's count of `kind` for the pod. */
  add(slot: number, kind: CountKind, delta: number): void {
    Atomics.add(this.#counts, (slot * KINDS + kind) * this.#workers + this.#worker, delta);
  }

  /** Forgets what a worker that died had counted (its connections died with it). */
  clearWorker(worker: number): void {
    for (let slot = 0; slot < MAX_POD_SLOTS; slot++) {
      for (let kind = 0; kind < KINDS; kind++) Atomics.store(this.#counts, (slot * KINDS + kind) * this.#workers + worker, 0);
    }
  }
}

/** The main thread's side: which local pod has which slot. A departed pod's slot is given back once nothing of it is counted. */
export class PodSlotAllocator {
  readonly #counts: SharedPodCounts;
  readonly #free: number[];
  readonly #departed = new Set<string>();

  constructor(counts: SharedPodCounts) {
    this.#counts = counts;
    this.#free = Array.from({ length: MAX_POD_SLOTS }, (_, i) => MAX_POD_SLOTS - 1 - i);
  }

  /** Brings the slots in line with the local pods' uids; applies the changes to the main thread's counts and returns them for the workers. */
  update(localUids: Iterable<string>): SlotChanges {
    const local = new Set(localUids);
    const changes: SlotChanges = { assigned: [], freed: [] };
    for (const [uid] of this.#counts.slots()) if (!local.has(uid)) this.#departed.add(uid);
    for (const uid of this.#departed) {
      if (local.has(uid)) {
        this.#departed.delete(uid);
        continue;
      }
      const slot = this.#counts.slotOf(uid)!;
      if (this.#counts.total(slot, CONNECTIONS) + this.#counts.total(slot, REQUESTS) > 0) continue;
      this.#departed.delete(uid);
      changes.freed.push(uid);
      this.#free.push(slot);
    }
    for (const uid of local) {
      if (this.#counts.slotOf(uid) !== undefined) continue;
      const slot = this.#free.pop();
      if (slot === undefined) break;
      changes.assigned.push([uid, slot]);
    }
    this.#counts.apply(changes);
    return changes;
  }
}
