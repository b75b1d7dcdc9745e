import { test } from 'node:test';
import assert from 'node:assert/strict';
import { uriSans } from './identity.ts';

const IDENTITY = 'spiffe://cluster.local/ns/shop/sa/checkout';

test('uriSans: reads node:crypto\'s subjectAltName text, and a quoted value cannot pose as two names', () => {
  assert.deepEqual(uriSans(`URI:${IDENTITY}`), [IDENTITY]);
  assert.deepEqual(uriSans(`DNS:example.com, URI:${IDENTITY}, IP Address:10.0.0.1`), [IDENTITY]);
  assert.deepEqual(uriSans('URI:"spiffe://a/x, URI:spiffe://cluster.local/ns/shop/sa/checkout"'), ['spiffe://a/x, URI:spiffe://cluster.local/ns/shop/sa/checkout']);
  assert.deepEqual(uriSans(undefined), []);
});
