// The first half of loading http-proxy without its deprecation warning (see
// http-proxy.ts): puts in `util._extend` a function that does what Node's does
// (copy the source's own enumerable properties onto the target) without warning,
// until http-proxy.ts, once http-proxy has taken it, gives the deprecated one back.

import util from 'node:util';

type Extend = (target: object, source: unknown) => object;

const utilExtend = util as unknown as { _extend: Extend };
const deprecated = utilExtend._extend;

utilExtend._extend = function extend(target, source) {
  if (source === null || typeof source !== 'object') return target;
  for (const key of Object.keys(source)) (target as Record<string, unknown>)[key] = (source as Record<string, unknown>)[key];
  return target;
};

/** Gives `util._extend` back to Node, warning included, for every other caller. */
export function restoreUtilExtend(): void {
  utilExtend._extend = deprecated;
}
