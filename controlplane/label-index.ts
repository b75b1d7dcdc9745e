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

export class LabelIndex {
  readonly #byPair = new Map<string, Set<string>>();
  readonly #labels = new Map<string, { namespace: string; labels: Labels }>();

  set(id: string, namespace: string, labels: Labels): void {
    this.delete(id);
    this.#labels.set(id, { namespace, labels });
    for (const [k, v] of Object.entries(labels)) {
      const key = pairKey(namespace, k, v);
      let ids = this.#byPair.get(key);
      if (!ids) this.#byPair.set(key, (ids = new Set()));
      ids.add(id);
    }
  }

  delete(id: string): void {
    const entry = this.#labels.get(id);
    if (!entry) return;
    this.#labels.delete(id);
    for (const [k, v] of Object.entries(entry.labels)) {
      const key = pairKey(entry.namespace, k, v);
      const ids = this.#byPair.get(key);
      ids?.delete(id);
      if (ids?.size === 0) this.#byPair.delete(key);
    }
  }

  /** Ids in `namespace` whose labels carry every pair of a non-empty selector. */
  select(namespace: string, selector: Labels): string[] {
    let smallest: Set<string> | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const ids = this.#byPair.get(pairKey(namespace, k, v));
      if (!ids) return [];
      if (!smallest || ids.size < smallest.size) smallest = ids;
    }
    if (!smallest) return [];
    return [...smallest].filter((id) => selectorMatches(selector, this.#labels.get(id)!.labels));
  }
}

/** Selectors indexed by their pairs, to find which selectors a set of labels satisfies. */
export class SelectorIndex {
  readonly #byPair = new Map<string, Set<string>>();
  readonly #selectors = new Map<string, { namespace: string; selector: Labels }>();

  set(id: string, namespace: string, selector: Labels): void {
    this.delete(id);
    this.#selectors.set(id, { namespace, selector });
    for (const [k, v] of Object.entries(selector)) {
      const key = pairKey(namespace, k, v);
      let ids = this.#byPair.get(key);
      if (!ids) this.#byPair.set(key, (ids = new Set()));
      ids.add(id);
    }
  }

  delete(id: string): void {
    const entry = this.#selectors.get(id);
    if (!entry) return;
    this.#selectors.delete(id);
    for (const [k, v] of Object.entries(entry.selector)) {
      const key = pairKey(entry.namespace, k, v);
      const ids = this.#byPair.get(key);
      ids?.delete(id);
      if (ids?.size === 0) this.#byPair.delete(key);
    }
  }

  /** Ids of non-empty selectors in `namespace` that `labels` satisfy. */
  matching(namespace: string, labels: Labels): Set<string> {
    const out = new Set<string>();
    for (const [k, v] of Object.entries(labels)) {
      for (const id of this.#byPair.get(pairKey(namespace, k, v)) ?? []) {
        if (!out.has(id) && selectorMatches(this.#selectors.get(id)!.selector, labels)) out.add(id);
      }
    }
    return out;
  }
}
