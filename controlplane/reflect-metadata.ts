// The subset of the Reflect metadata API that tsyringe (under @peculiar/x509)
// calls: getMetadata, getOwnMetadata, defineMetadata. Installed only when absent.

type Target = object;

interface ReflectMetadata {
  getMetadata(key: unknown, target: Target): unknown;
  getOwnMetadata(key: unknown, target: Target): unknown;
  defineMetadata(key: unknown, value: unknown, target: Target): void;
}

const reflect = Reflect as typeof Reflect & Partial<ReflectMetadata>;

if (typeof reflect.getMetadata !== 'function') {
  const metadata = new WeakMap<Target, Map<unknown, unknown>>();
  const own = (key: unknown, target: Target) => metadata.get(target)?.get(key);
  reflect.getOwnMetadata = own;
  reflect.getMetadata = (key, target) => {
    for (let t: Target | null = target; t; t = Object.getPrototypeOf(t) as Target | null) {
      const value = own(key, t);
      if (value !== undefined) return value;
    }
    return undefined;
  };
  reflect.defineMetadata = (key, value, target) => {
    let entries = metadata.get(target);
    if (!entries) metadata.set(target, (entries = new Map()));
    entries.set(key, value);
  };
}
