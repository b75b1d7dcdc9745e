// Power of two random choices: two distinct ready endpoints drawn uniformly, the
// cheaper one wins. Nearly as good as least-loaded over all endpoints, at O(1),
// and without every node herding onto the same "best" endpoint.

import type { Endpoint } from '../core/types.ts';

/** `random` returns [0, 1); `cost` scores an endpoint IP (lower is better). */
export function chooseOfTwo(endpoints: readonly Endpoint[], random: () => number, cost: (ip: string) => number): Endpoint | undefined {
  const ready = endpoints.filter((e) => e.ready);
  if (ready.length <= 1) return ready[0];
  const i = Math.floor(random() * ready.length);
  // A second index distinct from the first, uniformly among the others.
  let j = Math.floor(random() * (ready.length - 1));
  if (j >= i) j++;
  const a = ready[i]!;
  const b = ready[j]!;
  return cost(b.ip) < cost(a.ip) ? b : a;
}
