// Members indexed by their namespace-scoped labels, so a selector finds its
// matches without scanning every member (10,000 pods x 1,000 Services).

export type Labels = Record<string, string>;

function pairKey(namespace: string, key: string, value: string): string {
  return `${namespace}\0${key}\0${value}`;
}

export function selectorMatches(selector: Labels, labels: Labels): boolean {
  for (const k in selector) {
    if (labels[k] !== selector[k]) return false;
  }
  return true;
}

/** Each id's namespace-scoped label pairs, and the ids carrying each pair. */
class PairIndex {
  readonly #byPair = new Map<string, Set<string>>();
  readonly #entries = new Map<string, { namespace: string; pairs: Labels }>();

  set(id: string, namespace: string, pairs: Labels): void {
    this.delete(id);
    this.#entries.set(id, { namespace, pairs });
    for (const [k, v] of Object.entries(pairs)) {
      const key = pairKey(namespace, k, v);
      let ids = this.#byPair.get(key);
      if (!ids) this.#byPair.set(key, (ids = new Set()));
      ids.add(id);
    }
  }

  delete(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    this.#entries.delete(id);
    for (const [k, v] of Object.entries(entry.pairs)) {
      const key = pairKey(entry.namespace, k, v);
      const ids = this.#byPair.get(key);
      ids?.delete(id);
      if (ids?.size === 0) this.#byPair.delete(key);
    }
  }

  withPair(namespace: string, key: string, value: string): Set<string> | undefined {
    return this.#byPair.get(pairKey(namespace, key, value));
  }

  pairsOf(id: string): Labels {
    return this.#entries.get(id)!.pairs;
  }
}

/** Members (pods) by their labels, to find the members a selector selects. */
export class LabelIndex {
  readonly #index = new PairIndex();

  set(id: string, namespace: string, labels: Labels): void {
    this.#index.set(id, namespace, labels);
  }

  delete(id: string): void {
    this.#index.delete(id);
  }

  /** Ids in `namespace` whose labels carry every pair of a non-empty selector. */
  select(namespace: string, selector: Labels): string[] {
    let smallest: Set<string> | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const ids = this.#index.withPair(namespace, k, v);
      if (!ids) return [];
      if (!smallest || ids.size < smallest.size) smallest = ids;
    }
    if (!smallest) return [];
    return [...smallest].filter((id) => selectorMatches(selector, this.#index.pairsOf(id)));
  }
}

/** Selectors (of Services) by their pairs, to find which selectors a set of labels satisfies. */
export class SelectorIndex {
  readonly #index = new PairIndex();

  set(id: string, namespace: string, selector: Labels): void {
    this.#index.set(id, namespace, selector);
  }

  delete(id: string): void {
    this.#index.delete(id);
  }

  /** Ids of non-empty selectors in `namespace` that `labels` satisfy. */
  matching(namespace: string, labels: Labels): Set<string> {
    const out = new Set<string>();
    for (const [k, v] of Object.entries(labels)) {
      for (const id of this.#index.withPair(namespace, k, v) ?? []) {
        if (!out.has(id) && selectorMatches(this.#index.pairsOf(id), labels)) out.add(id);
      }
    }
    return out;
  }
}
