import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFlags, UsageError } from './args.ts';

const spec = {
  'node-name': { type: 'string', description: 'this node', required: true },
  'state-dir': { type: 'string', description: 'state', default: '/var/lib/nodemesh' },
  'no-dataplane': { type: 'boolean', description: 'agent only' },
} as const;

test('args: parses flags, fills defaults and booleans', () => {
  const v = parseFlags('node', 'runs a node', ['--node-name', 'n1', '--no-dataplane'], spec);
  assert.equal(v['node-name'], 'n1');
  assert.equal(v['state-dir'], '/var/lib/nodemesh');
  assert.equal(v['no-dataplane'], true);
  assert.equal(v.help, false);
});

test('args: an unknown flag or a missing required one is a UsageError naming it, with usage', () => {
  assert.throws(() => parseFlags('node', 'runs a node', ['--node-name', 'n1', '--bogus'], spec), (err: unknown) => {
    assert.ok(err instanceof UsageError);
    assert.match(err.message, /--bogus/);
    assert.match(err.message, /usage: nodemesh node/);
    return true;
  });
  assert.throws(() => parseFlags('node', 'runs a node', [], spec), /missing required --node-name/);
  assert.equal(parseFlags('node', 'runs a node', ['--help'], spec).help, true);
});

test('args: a flag like --uninstall can exempt the command from required flags', () => {
  const withUninstall = { ...spec, uninstall: { type: 'boolean', description: 'remove rules' } } as const;
  assert.equal(parseFlags('node', 'runs a node', ['--uninstall'], withUninstall, { exemptsRequired: 'uninstall' }).uninstall, true);
  assert.throws(() => parseFlags('node', 'runs a node', [], withUninstall, { exemptsRequired: 'uninstall' }), UsageError);
});
