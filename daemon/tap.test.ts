import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tap, TapFilterError, parseTapFilter, tapMatches } from './tap.ts';
import type { TapEvent } from './tap.ts';

const request: TapEvent = {
  event: 'request', source: { ip: '10.1.0.7', workload: 'demo/client', identity: 'spiffe://cluster.local/ns/demo/sa/client' },
  destination: { ip: '10.2.0.10', port: 7000, workload: 'shop/server-a', identity: 'spiffe://cluster.local/ns/shop/sa/server' },
};

test('tap filter: event kinds, a namespace and a workload of either end', () => {
  const f = parseTapFilter(new URLSearchParams('event=request,refusal&namespace=shop&workload=server-a'));
  assert.deepEqual([...f.events!], ['request', 'refusal']);
  assert.equal(tapMatches(f, request), true);
  assert.equal(tapMatches(f, { ...request, event: 'open' }), false, 'open is not asked for');
  assert.equal(tapMatches(parseTapFilter(new URLSearchParams('namespace=demo')), request), true, 'the source end matches too');
  assert.equal(tapMatches(parseTapFilter(new URLSearchParams('namespace=other')), request), false);
  assert.equal(tapMatches(parseTapFilter(new URLSearchParams('workload=client')), request), true);
  assert.equal(tapMatches(parseTapFilter(new URLSearchParams('workload=demo')), request), false, 'a namespace is not a workload name');
  const plaintext: TapEvent = { event: 'refusal', source: { ip: '10.1.0.20', workload: null, identity: null }, destination: request.destination };
  assert.equal(tapMatches(parseTapFilter(new URLSearchParams('namespace=shop')), plaintext), true, 'an end outside the config never throws');
  assert.deepEqual(parseTapFilter(new URLSearchParams('')), {});
});

test('tap filter: hostile parameters are refused naming the parameter, never matched', () => {
  const hostile = [
    ['event=request,drop', /event: "drop" is not one of open, close, refusal, request/],
    ['event=', /event: "" is not one of/],
    ['event=__proto__', /"__proto__" is not one of/],
    ['event=request&event=close', /event given more than once/],
    ['namespace=../kube-system', /namespace: "..\/kube-system" is not a namespace name/],
    ['namespace=Shop', /is not a namespace name/],
    [`namespace=${'a'.repeat(64)}`, /is not a namespace name/],
    ['namespace=', /is not a namespace name/],
    ['namespace=shop%0d%0aX-Injected:%201', /is not a namespace name/],
    ['workload=a*', /workload: "a\*" is not a pod name/],
    [`workload=${'a'.repeat(300)}`, /is not a pod name/],
    ['workload=%00', /is not a pod name/],
    ['constructor=1', /unknown parameter "constructor"; the filters are event, namespace, workload/],
    ['ns=shop', /unknown parameter "ns"/],
  ] as const;
  for (const [query, message] of hostile) {
    assert.throws(() => parseTapFilter(new URLSearchParams(query)), (err: unknown) => {
      assert.ok(err instanceof TapFilterError, query);
      assert.equal(err.code, 'NM_BAD_TAP_FILTER');
      assert.match(err.message, message, query);
      assert.ok(err.message.length < 300, `a long value is cut in the message: ${query.slice(0, 40)}`);
      return true;
    });
  }
});

test('tap: builds nothing without listeners, delivers each listener what its filter lets through, stops on unsubscribe', () => {
  const tap = new Tap();
  assert.equal(tap.active, false);
  const all: TapEvent[] = [];
  const refusals: TapEvent[] = [];
  const stopAll = tap.subscribe((e) => all.push(e));
  const stopRefusals = tap.subscribe((e) => refusals.push(e), parseTapFilter(new URLSearchParams('event=refusal')));
  assert.equal(tap.active, true);
  tap.publish(request);
  tap.publish({ ...request, event: 'refusal', reason: 'policy' });
  assert.deepEqual(all.map((e) => e.event), ['request', 'refusal']);
  assert.deepEqual(refusals.map((e) => [e.event, e.reason]), [['refusal', 'policy']]);
  assert.match(String(all[0]!.time), /^\d{4}-\d\d-\d\dT/);
  stopAll();
  stopRefusals();
  assert.equal(tap.active, false);
  tap.publish(request);
  assert.equal(all.length, 2);
});
