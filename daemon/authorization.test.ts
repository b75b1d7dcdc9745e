import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuthorizationPolicy, PolicyOperation, PolicyRule, PolicySource, Workload } from '../core/types.ts';
import fc from 'fast-check';
import { authorize, cidrMatch, wildcardMatch } from './authorization.ts';
import type { AuthorizationInput } from './authorization.ts';

const dest: Workload = {
  uid: 'u1', namespace: 'shop', name: 'cart-1', workloadName: 'cart', serviceAccount: 'cart', node: 'n1',
  ip: '10.0.0.9', labels: { app: 'cart' }, enrolled: true, mtlsMode: 'permissive', namedPorts: {},
};

function src(s: Partial<PolicySource>): PolicySource {
  return { principals: [], notPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [], notIpBlocks: [], ...s };
}
function op(o: Partial<PolicyOperation>): PolicyOperation {
  return { ports: [], notPorts: [], methods: [], notMethods: [], paths: [], notPaths: [], ...o };
}
function policy(name: string, action: 'ALLOW' | 'DENY', rules: PolicyRule[]): AuthorizationPolicy {
  return { namespace: 'shop', name, selector: null, action, rules };
}
function mtls(extra: Partial<AuthorizationInput> = {}): AuthorizationInput {
  return {
    sourcePrincipal: 'spiffe://cluster.local/ns/web/sa/frontend', sourceNamespace: 'web', sourceIp: '10.0.1.5',
    destination: dest, port: 8080, ...extra,
  };
}
const plaintext = (extra: Partial<AuthorizationInput> = {}) => mtls({ sourcePrincipal: null, sourceNamespace: null, ...extra });

test('no policies: allowed', () => {
  const d = authorize(mtls(), []);
  assert.equal(d.allowed, true);
  assert.equal(d.policy, undefined);
});

test('ALLOW policy with no rules allows nothing', () => {
  const d = authorize(mtls(), [policy('lockdown', 'ALLOW', [])]);
  assert.equal(d.allowed, false);
  assert.match(d.reason, /shop\/lockdown/);
});

test('ALLOW policy with one empty rule allows everything, including plaintext', () => {
  const p = policy('all', 'ALLOW', [{ from: [], to: [] }]);
  assert.deepEqual(authorize(mtls(), [p]), { allowed: true, policy: 'shop/all', reason: 'allowed by ALLOW policy shop/all' });
  assert.equal(authorize(plaintext(), [p]).allowed, true);
});

test('DENY policy with no rules denies nothing', () => {
  assert.equal(authorize(mtls(), [policy('nothing', 'DENY', [])]).allowed, true);
});

test('DENY wins over a matching ALLOW', () => {
  const allow = policy('allow-all', 'ALLOW', [{ from: [], to: [] }]);
  const deny = policy('deny-web', 'DENY', [{ from: [src({ namespaces: ['web'] })], to: [] }]);
  const d = authorize(mtls(), [allow, deny]);
  assert.deepEqual(d, { allowed: false, policy: 'shop/deny-web', reason: 'denied by DENY policy shop/deny-web' });
});

test('principals match with or without spiffe:// and with wildcards', () => {
  const cases: [string, boolean][] = [
    ['cluster.local/ns/web/sa/frontend', true],
    ['spiffe://cluster.local/ns/web/sa/frontend', true],
    ['cluster.local/ns/web/sa/*', true],
    ['*/sa/frontend', true],
    ['*', true],
    ['cluster.local/ns/web/sa/backend', false],
    ['spiffe://other.domain/ns/web/sa/frontend', false],
  ];
  for (const [pattern, expected] of cases) {
    const p = policy('p', 'ALLOW', [{ from: [src({ principals: [pattern] })], to: [] }]);
    assert.equal(authorize(mtls(), [p]).allowed, expected, pattern);
  }
});

test('principals and namespaces never match a plaintext source; their not* forms always do', () => {
  const byPrincipal = policy('p', 'ALLOW', [{ from: [src({ principals: ['*'] })], to: [] }]);
  const byNamespace = policy('p', 'ALLOW', [{ from: [src({ namespaces: ['*'] })], to: [] }]);
  assert.equal(authorize(plaintext(), [byPrincipal]).allowed, false);
  assert.equal(authorize(plaintext(), [byNamespace]).allowed, false);
  // The Istio idiom to require mTLS: DENY notPrincipals ["*"].
  const requireMtls = policy('require-mtls', 'DENY', [{ from: [src({ notPrincipals: ['*'] })], to: [] }]);
  assert.equal(authorize(plaintext(), [requireMtls]).allowed, false);
  assert.equal(authorize(mtls(), [requireMtls]).allowed, true);
});

test('notPrincipals and notNamespaces exclude matching sources', () => {
  const p = policy('p', 'ALLOW', [{ from: [src({ notNamespaces: ['web'] })], to: [] }]);
  assert.equal(authorize(mtls(), [p]).allowed, false);
  assert.equal(authorize(mtls({ sourceNamespace: 'admin' }), [p]).allowed, true);
  const q = policy('q', 'ALLOW', [{ from: [src({ notPrincipals: ['cluster.local/ns/web/*'] })], to: [] }]);
  assert.equal(authorize(mtls(), [q]).allowed, false);
});

test('every set field of a source must match', () => {
  const p = policy('p', 'ALLOW', [{ from: [src({ namespaces: ['web'], ipBlocks: ['192.168.0.0/16'] })], to: [] }]);
  assert.equal(authorize(mtls(), [p]).allowed, false);
  assert.equal(authorize(mtls({ sourceIp: '192.168.3.4' }), [p]).allowed, true);
});

test('any of the sources of a rule may match', () => {
  const p = policy('p', 'ALLOW', [{ from: [src({ namespaces: ['admin'] }), src({ ipBlocks: ['10.0.1.0/24'] })], to: [] }]);
  assert.equal(authorize(plaintext(), [p]).allowed, true);
  assert.equal(authorize(plaintext({ sourceIp: '10.0.2.1' }), [p]).allowed, false);
});

test('ipBlocks: CIDR, single address, IPv4-mapped peers, notIpBlocks', () => {
  assert.equal(cidrMatch('10.0.0.0/8', '10.200.1.1'), true);
  assert.equal(cidrMatch('10.0.0.0/8', '11.0.0.1'), false);
  assert.equal(cidrMatch('10.0.1.5', '10.0.1.5'), true);
  assert.equal(cidrMatch('10.0.1.5', '10.0.1.6'), false);
  assert.equal(cidrMatch('10.0.0.0/8', '::ffff:10.0.0.1'), true);
  assert.equal(cidrMatch('fd00::/8', 'fd00::1'), true);
  assert.equal(cidrMatch('not-a-cidr', '10.0.0.1'), false);
  assert.equal(cidrMatch('10.0.0.0/33', '10.0.0.1'), false);
  const p = policy('p', 'DENY', [{ from: [src({ notIpBlocks: ['10.0.0.0/8'] })], to: [] }]);
  assert.equal(authorize(mtls(), [p]).allowed, true);
  assert.equal(authorize(mtls({ sourceIp: '172.16.0.1' }), [p]).allowed, false);
});

test('ports and notPorts', () => {
  const p = policy('p', 'ALLOW', [{ from: [], to: [op({ ports: [80, 8080] })] }]);
  assert.equal(authorize(mtls(), [p]).allowed, true);
  assert.equal(authorize(mtls({ port: 9090 }), [p]).allowed, false);
  const q = policy('q', 'DENY', [{ from: [], to: [op({ notPorts: [8080] })] }]);
  assert.equal(authorize(mtls(), [q]).allowed, true);
  assert.equal(authorize(mtls({ port: 22 }), [q]).allowed, false);
});

test('a rule needs a matching source AND a matching operation', () => {
  const p = policy('p', 'ALLOW', [{ from: [src({ namespaces: ['web'] })], to: [op({ ports: [443] })] }]);
  assert.equal(authorize(mtls(), [p]).allowed, false);
  assert.equal(authorize(mtls({ port: 443 }), [p]).allowed, true);
  assert.equal(authorize(mtls({ port: 443, sourceNamespace: 'other' }), [p]).allowed, false);
});

test('at L4, HTTP-only operation fields never satisfy ALLOW and always satisfy DENY', () => {
  for (const fields of [{ methods: ['GET'] }, { paths: ['/admin*'] }, { notMethods: ['POST'] }, { notPaths: ['/x'] }]) {
    const allow = policy('a', 'ALLOW', [{ from: [], to: [op(fields)] }]);
    assert.equal(authorize(mtls(), [allow]).allowed, false, JSON.stringify(fields));
    const deny = policy('d', 'DENY', [{ from: [], to: [op(fields)] }]);
    assert.equal(authorize(mtls(), [deny]).allowed, false, JSON.stringify(fields));
  }
  // The port still has to match for DENY to apply.
  const deny = policy('d', 'DENY', [{ from: [], to: [op({ ports: [9999], methods: ['GET'] })] }]);
  assert.equal(authorize(mtls(), [deny]).allowed, true);
});

test('at L7, methods and paths are matched', () => {
  const p = policy('p', 'ALLOW', [{ from: [], to: [op({ methods: ['GET', 'HEAD'], paths: ['/api/*', '*.css', '/exact'] })] }]);
  const at = (method: string, path: string) => authorize(mtls({ http: { method, path } }), [p]).allowed;
  assert.equal(at('GET', '/api/items'), true);
  assert.equal(at('HEAD', '/site.css'), true);
  assert.equal(at('GET', '/exact'), true);
  assert.equal(at('GET', '/exactly'), false);
  assert.equal(at('POST', '/api/items'), false);
  const q = policy('q', 'DENY', [{ from: [], to: [op({ notMethods: ['GET'], notPaths: ['/public/*'] })] }]);
  const deniedAt = (method: string, path: string) => !authorize(mtls({ http: { method, path } }), [q]).allowed;
  assert.equal(deniedAt('GET', '/private'), false);
  assert.equal(deniedAt('POST', '/public/x'), false);
  assert.equal(deniedAt('POST', '/private'), true);
});

test('several ALLOW policies: one match is enough; the decision names it', () => {
  const a = policy('a', 'ALLOW', [{ from: [src({ namespaces: ['admin'] })], to: [] }]);
  const b = policy('b', 'ALLOW', [{ from: [src({ namespaces: ['web'] })], to: [] }]);
  const d = authorize(mtls(), [a, b]);
  assert.equal(d.allowed, true);
  assert.equal(d.policy, 'shop/b');
  const denied = authorize(mtls({ sourceNamespace: 'x' }), [a, b]);
  assert.equal(denied.allowed, false);
  assert.match(denied.reason, /shop\/a, shop\/b/);
});

test('DENY-only policies do not turn on default-deny', () => {
  const deny = policy('d', 'DENY', [{ from: [src({ namespaces: ['evil'] })], to: [] }]);
  assert.equal(authorize(mtls(), [deny]).allowed, true);
  assert.equal(authorize(mtls({ sourceNamespace: 'evil' }), [deny]).allowed, false);
});

test('wildcardMatch', () => {
  assert.equal(wildcardMatch('*', ''), false);
  assert.equal(wildcardMatch('*', 'x'), true);
  assert.equal(wildcardMatch('ab*', 'abc'), true);
  assert.equal(wildcardMatch('*bc', 'abc'), true);
  assert.equal(wildcardMatch('abc', 'abcd'), false);
});

test('property: a connection allowed at L4 allows each of its requests (why the destination may splice it)', () => {
  const list = <T>(values: T[]) => fc.subarray(values, { maxLength: Math.min(2, values.length) });
  const operation = fc.record({
    ports: list([8080, 9090]), notPorts: list([8080, 9090]), methods: list(['GET', 'POST']), notMethods: list(['GET']),
    paths: list(['/public/*', '/admin', '*']), notPaths: list(['/health']),
  });
  const source = fc.record({
    principals: list(['spiffe://cluster.local/ns/web/sa/frontend', '*']), notPrincipals: list(['*']), namespaces: list(['web', 'ops']),
    notNamespaces: list(['web']), ipBlocks: list(['10.0.1.0/24', '10.9.0.0/16']), notIpBlocks: list(['10.0.1.5']),
  });
  const rule = fc.record({ from: fc.array(source, { maxLength: 2 }), to: fc.array(operation, { maxLength: 2 }) });
  const policies = fc.array(fc.record({ action: fc.constantFrom('ALLOW' as const, 'DENY' as const), rules: fc.array(rule, { maxLength: 2 }) }), { maxLength: 3 })
    .map((ps) => ps.map((p, i) => policy(`p${i}`, p.action, p.rules)));
  const request = fc.record({ method: fc.constantFrom('GET', 'POST', 'DELETE'), path: fc.constantFrom('/', '/public/a', '/admin', '/health') });
  fc.assert(fc.property(policies, fc.constantFrom(8080, 9090), fc.boolean(), request, (ps, port, secure, http) => {
    const conn = secure ? mtls({ port }) : plaintext({ port });
    fc.pre(authorize(conn, ps).allowed);
    assert.equal(authorize({ ...conn, http }, ps).allowed, true, 'allowed at L4, refused at L7');
  }), { numRuns: 3000 });
});
