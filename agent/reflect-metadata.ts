// The subset of the Reflect metadata API that tsyringe (under @peculiar/x509)
// calls at load time, kept per target in a WeakMap. Installed only when absent.

type MetadataTarget = object;
const store = new WeakMap<MetadataTarget, Map<unknown, unknown>>();

interface ReflectMetadata {
  getMetadata(key: unknown, target: MetadataTarget): unknown;
  getOwnMetadata(key: unknown, target: MetadataTarget): unknown;
  defineMetadata(key: unknown, value: unknown, target: MetadataTarget): void;
}

const reflect = Reflect as typeof Reflect & Partial<ReflectMetadata>;

if (typeof reflect.getMetadata !== 'function') {
  const own = (key: unknown, target: MetadataTarget) => store.get(target)?.get(key);
  reflect.getOwnMetadata = own;
  reflect.getMetadata = (key, target) => {
    for (let t: MetadataTarget | null = target; t; t = Object.getPrototypeOf(t)) {
      const value = own(key, t);
      if (value !== undefined) return value;
    }
    return undefined;
  };
  reflect.defineMetadata = (key, value, target) => {
    let entries = store.get(target);
    if (!entries) store.set(target, (entries = new Map()));
    entries.set(key, value);
  };
}
