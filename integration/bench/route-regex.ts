// Route regex matching, backtracking (what the node used before) against the
// linear-time engine it uses now (core/route-regex.ts), on one thread with
// nothing else running: `node integration/bench/route-regex.ts`. The
// backtracking side stops at a 30-character path (5 s here, doubling per character).

import { compileRouteRegex } from '../../core/route-regex.ts';

function ms(fn: () => void, rounds = 1): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1e6 / rounds;
}

const backtracking = new RegExp('^(?:/(a+)+)$');
const linear = compileRouteRegex('/(a+)+');
const rows: [string, string, string][] = [];
for (const n of [21, 25, 27, 28]) {
  const path = `/${'a'.repeat(n)}!`;
  rows.push([`/(a+)+ against a ${path.length}-character path`, ms(() => backtracking.test(path)).toFixed(1), ms(() => linear.test(path), 100).toFixed(3)]);
}
const big = `/${'a'.repeat(10 * 1024)}!`;
rows.push(['/(a+)+ against a 10 KiB path', 'never finishes', ms(() => linear.test(big), 20).toFixed(2)]);
let random = '';
for (let i = 0; i < 10 * 1024; i++) random += Math.random() < 0.5 ? 'a' : 'b';
const hostile = compileRouteRegex('/x(?:a|b)*a(?:a|b){15}');
rows.push(['/x(?:a|b)*a(?:a|b){15} against 10 KiB of a|b', '-', ms(() => hostile.test(`/x${random}`), 5).toFixed(1)]);
const typicalPath = '/api/v2/users/alice';
const typicalBt = new RegExp('^(?:/api/v[0-9]+/users/[^/]+)$');
const typical = compileRouteRegex('/api/v[0-9]+/users/[^/]+');
rows.push([`/api/v[0-9]+/users/[^/]+ against ${typicalPath}`, ms(() => typicalBt.test(typicalPath), 100_000).toFixed(5), ms(() => typical.test(typicalPath), 100_000).toFixed(5)]);

console.log('| match | backtracking ms | linear ms |\n|---|---|---|');
for (const [what, bt, lin] of rows) console.log(`| ${what} | ${bt} | ${lin} |`);
