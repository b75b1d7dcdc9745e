import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toAuthorizationPolicy } from './authorization-policy.ts';
import type { KubeObject } from './source.ts';
import { InvalidObjectError } from '../core/errors.ts';

function policy(spec: Record<string, unknown>): KubeObject {
  return { apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-legacy', namespace: 'demo' }, spec };
}

const EMPTY_SOURCE = { principals: [], notPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [], notIpBlocks: [] };
const EMPTY_OPERATION = { ports: [], notPorts: [], methods: [], notMethods: [], paths: [], notPaths: [] };

test('a policy converts with selector, action and rules; ports as strings or numbers', () => {
  const p = toAuthorizationPolicy(policy({
    selector: { matchLabels: { app: 'server' } },
    action: 'DENY',
    rules: [{
      from: [{ source: { namespaces: ['legacy'], notPrincipals: ['cluster.local/ns/demo/sa/client'], ipBlocks: ['10.244.0.0/16', '10.1.2.3', 'fd00::/8'] } }],
      to: [{ operation: { ports: ['7001', 8080], methods: ['GET'], notPaths: ['/healthz'] } }],
    }],
  }));
  assert.deepEqual(p, {
    namespace: 'demo', name: 'deny-legacy', selector: { app: 'server' }, action: 'DENY',
    rules: [{
      from: [{ ...EMPTY_SOURCE, namespaces: ['legacy'], notPrincipals: ['cluster.local/ns/demo/sa/client'], ipBlocks: ['10.244.0.0/16', '10.1.2.3', 'fd00::/8'] }],
      to: [{ ...EMPTY_OPERATION, ports: [7001, 8080], methods: ['GET'], notPaths: ['/healthz'] }],
    }],
  });
});

test('defaults: ALLOW, no selector, no rules (allow nothing)', () => {
  assert.deepEqual(toAuthorizationPolicy(policy({})), { namespace: 'demo', name: 'deny-legacy', selector: null, action: 'ALLOW', rules: [] });
  assert.deepEqual(toAuthorizationPolicy(policy({ rules: [{}] })).rules, [{ from: [], to: [] }]);
});

function invalid(spec: Record<string, unknown>, field: string, reason: RegExp): void {
  assert.throws(() => toAuthorizationPolicy(policy(spec)), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.object, 'AuthorizationPolicy demo/deny-legacy');
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    return true;
  });
}

test('invalid policy fields are errors naming the field', () => {
  invalid({ action: 'AUDIT' }, 'spec.action', /ALLOW or DENY/);
  invalid({ targetRefs: [] }, 'spec.targetRefs', /unknown field/);
  invalid({ selector: { matchExpressions: [] } }, 'spec.selector.matchExpressions', /unknown field/);
  invalid({ rules: [{ when: [] }] }, 'spec.rules[0].when', /unknown field/);
  invalid({ rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }, 'spec.rules[0].from[0].source.requestPrincipals', /unknown field; expected one of principals/);
  invalid({ rules: [{ from: [{}] }] }, 'spec.rules[0].from[0].source', /required/);
  invalid({ rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] }, 'spec.rules[0].from[0].source.ipBlocks[0]', /prefix length must be 0-32/);
  invalid({ rules: [{ from: [{ source: { notIpBlocks: ['10.0.0/8'] } }] }] }, 'spec.rules[0].from[0].source.notIpBlocks[0]', /not an IP address or CIDR/);
  invalid({ rules: [{ to: [{ operation: { ports: ['0'] } }] }] }, 'spec.rules[0].to[0].operation.ports[0]', /between 1 and 65535/);
  invalid({ rules: [{ to: [{ operation: { notPorts: [70000] } }] }] }, 'spec.rules[0].to[0].operation.notPorts[0]', /between 1 and 65535/);
  invalid({ rules: [{ to: [{ operation: { ports: ['http'] } }] }] }, 'spec.rules[0].to[0].operation.ports[0]', /must be a port number/);
  invalid({ rules: [{ to: [{ operation: { hosts: ['a'] } }] }] }, 'spec.rules[0].to[0].operation.hosts', /unknown field/);
  invalid({ rules: [{ to: [{ operation: { methods: [''] } }] }] }, 'spec.rules[0].to[0].operation.methods[0]', /non-empty string/);
});

test('a port that is a self-referencing value (a YAML alias inside its anchor) is an error, not a TypeError', () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  invalid({ rules: [{ to: [{ operation: { ports: [cyclic] } }] }] }, 'spec.rules[0].to[0].operation.ports[0]', /must be a port number, got an object/);
});
