import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toPod } from './pod.ts';
import type { KubeObject } from './source.ts';
import type { MeshNamespace } from './namespace.ts';
import { InvalidObjectError } from '../core/errors.ts';

const ENROLLED: MeshNamespace = { name: 'demo', enrolled: true, mtlsMode: 'strict' };
const PLAIN: MeshNamespace = { name: 'demo', enrolled: false, mtlsMode: 'permissive' };

function pod(overrides: { metadata?: Partial<KubeObject['metadata']>; spec?: Record<string, unknown>; status?: Record<string, unknown> } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'server-7d9f8c6b5-x2x4z', namespace: 'demo', uid: 'uid-1', labels: { app: 'server', 'pod-template-hash': '7d9f8c6b5' }, ...overrides.metadata },
    spec: { nodeName: 'node-2', serviceAccountName: 'server', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }, { containerPort: 9090 }] }], ...overrides.spec },
    status: { podIP: '10.244.2.10', conditions: [{ type: 'Ready', status: 'True' }], ...overrides.status },
  };
}

test('a pod becomes a workload with identity fields, named ports and readiness', () => {
  const owned = pod({ metadata: { ownerReferences: [{ kind: 'ReplicaSet', name: 'server-7d9f8c6b5', controller: true }] } });
  const result = toPod(owned, ENROLLED);
  assert.deepEqual(result, {
    ready: true,
    workload: {
      uid: 'uid-1', namespace: 'demo', name: 'server-7d9f8c6b5-x2x4z', workloadName: 'server', serviceAccount: 'server', node: 'node-2',
      ip: '10.244.2.10', labels: { app: 'server', 'pod-template-hash': '7d9f8c6b5' }, enrolled: true, mtlsMode: 'strict', namedPorts: { http: 8080 },
    },
  });
});

test('workload name comes from the owner, else the app labels, else the pod name', () => {
  const name = (p: KubeObject) => toPod(p, PLAIN)!.workload.workloadName;
  // ReplicaSet without the pod-template-hash label: strip the generated suffix.
  assert.equal(name(pod({ metadata: { labels: {}, ownerReferences: [{ kind: 'ReplicaSet', name: 'web-frontend-5c7f9d8b4' }] } })), 'web-frontend');
  assert.equal(name(pod({ metadata: { ownerReferences: [{ kind: 'StatefulSet', name: 'db', controller: true }] } })), 'db');
  assert.equal(name(pod({ metadata: { ownerReferences: [{ kind: 'DaemonSet', name: 'agent' }] } })), 'agent');
  assert.equal(name(pod({ metadata: { ownerReferences: [{ kind: 'Job', name: 'migrate' }] } })), 'migrate');
  assert.equal(name(pod({ metadata: { labels: { 'app.kubernetes.io/name': 'shop', app: 'other' } } })), 'shop');
  assert.equal(name(pod({ metadata: { labels: { app: 'server' } } })), 'server');
  assert.equal(name(pod({ metadata: { name: 'solo', labels: {} } })), 'solo');
});

test('pod annotation overrides the namespace enrollment; defaults fill in', () => {
  assert.equal(toPod(pod({ metadata: { annotations: { 'nodemesh.io/mesh': 'disabled' } } }), ENROLLED)!.workload.enrolled, false);
  assert.equal(toPod(pod({ metadata: { annotations: { 'nodemesh.io/mesh': 'enabled' } } }), PLAIN)!.workload.enrolled, true);
  assert.equal(toPod(pod(), PLAIN)!.workload.enrolled, false);
  const bare = toPod(pod({ metadata: { uid: undefined }, spec: { serviceAccountName: undefined } }), PLAIN)!.workload;
  assert.equal(bare.serviceAccount, 'default');
  assert.match(bare.uid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(toPod(pod({ metadata: { uid: undefined } }), PLAIN)!.workload.uid, bare.uid, 'derived uid is stable');
  assert.notEqual(toPod(pod({ metadata: { uid: undefined, name: 'other' } }), PLAIN)!.workload.uid, bare.uid);
});

test('not-ready, IP-less, terminated and host-network pods', () => {
  assert.equal(toPod(pod({ status: { conditions: [{ type: 'Ready', status: 'False' }] } }), PLAIN)!.ready, false);
  assert.equal(toPod(pod({ status: { conditions: [] } }), PLAIN)!.ready, true);
  assert.equal(toPod(pod({ status: { podIP: undefined } }), PLAIN), null);
  assert.equal(toPod(pod({ status: { phase: 'Succeeded' } }), PLAIN), null);
  assert.equal(toPod(pod({ spec: { hostNetwork: true } }), PLAIN), null);
});

function invalid(p: KubeObject, field: string, reason: RegExp): void {
  assert.throws(() => toPod(p, PLAIN), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.object, 'Pod demo/server-7d9f8c6b5-x2x4z');
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    return true;
  });
}

test('invalid pod fields are errors naming the field', () => {
  invalid(pod({ status: { podIP: '10.244.2' } }), 'status.podIP', /not an IP address/);
  invalid(pod({ metadata: { annotations: { 'nodemesh.io/mesh': 'on' } } }), 'metadata.annotations["nodemesh.io/mesh"]', /enabled, disabled/);
  invalid(pod({ spec: { containers: [{ ports: [{ name: 'http', containerPort: 70000 }] }] } }), 'spec.containers[0].ports[0].containerPort', /between 1 and 65535/);
  invalid(pod({ spec: { containers: [{ ports: [{ name: 'http' }] }] } }), 'spec.containers[0].ports[0].containerPort', /required/);
  invalid(pod({ spec: { nodeName: 7 } }), 'spec.nodeName', /must be a string/);
  invalid(pod({ metadata: { labels: { app: 1 as unknown as string } } }), 'metadata.labels.app', /must be a string/);
  invalid(pod({ spec: { containers: 'c' } }), 'spec.containers', /must be a list/);
});

test('per-pod limit annotations set the pod\'s connection and concurrent-request caps; absent, the node default applies', () => {
  const limited = toPod(pod({ metadata: { annotations: { 'nodemesh.io/max-connections': '2000', 'nodemesh.io/max-concurrent-requests': '50' } } }), PLAIN)!.workload;
  assert.equal(limited.maxConnections, 2000);
  assert.equal(limited.maxConcurrentRequests, 50);
  const plain = toPod(pod(), PLAIN)!.workload;
  assert.equal('maxConnections' in plain, false);
  assert.equal('maxConcurrentRequests' in plain, false);
});

test('a bad limit annotation rejects its Pod naming the annotation', () => {
  for (const value of ['0', '-1', '1.5', '1e3', 'lots', '', '1000001', '99999999999999999999', ' 0x10']) {
    invalid(pod({ metadata: { annotations: { 'nodemesh.io/max-connections': value } } }), 'metadata.annotations["nodemesh.io/max-connections"]', /whole number from 1 to 1000000/);
    invalid(pod({ metadata: { annotations: { 'nodemesh.io/max-concurrent-requests': value } } }), 'metadata.annotations["nodemesh.io/max-concurrent-requests"]', /whole number from 1 to 1000000/);
  }
});

test('a Pod whose ownerReferences is not a list is rejected naming the field, not with a TypeError', () => {
  invalid(pod({ metadata: { ownerReferences: 'oops' as never } }), 'metadata.ownerReferences', /must be a list, got string "oops"/);
  invalid(pod({ metadata: { ownerReferences: [7] as never } }), 'metadata.ownerReferences[0]', /must be an object/);
  invalid(pod({ metadata: { ownerReferences: [{ kind: 'ReplicaSet', name: 7 }] as never } }), 'metadata.ownerReferences[0].name', /must be a string/);
  invalid(pod({ metadata: { ownerReferences: [{ kind: 'StatefulSet', name: 'db', controller: 'yes' }] as never } }), 'metadata.ownerReferences[0].controller', /must be true or false/);
});

test('wrong types in the envelope and in fields read as flags are errors naming the field', () => {
  invalid(pod({ metadata: { uid: 5 as never } }), 'metadata.uid', /must be a string, got number 5/);
  // "true" as a string once made the pod a workload with the node's own IP.
  invalid(pod({ spec: { hostNetwork: 'true' } }), 'spec.hostNetwork', /must be true or false/);
  for (const metadata of ['oops', [], 7]) {
    assert.throws(() => toPod({ ...pod(), metadata: metadata as never }, PLAIN), (err: unknown) => err instanceof InvalidObjectError && err.object === 'Pod <no name>' && err.field === 'metadata');
  }
});

test('names that are not Kubernetes names are errors: they become keys and SPIFFE path segments', () => {
  invalid(pod({ spec: { serviceAccountName: 'admin/sa/root' } }), 'spec.serviceAccountName', /not a valid Kubernetes name/);
  assert.throws(() => toPod(pod({ metadata: { name: 'a/b' } }), PLAIN), /Pod demo\/a\/b: metadata\.name: not a valid Kubernetes name/);
  assert.throws(() => toPod(pod({ metadata: { namespace: 'Demo' } }), PLAIN), /metadata\.namespace: not a valid Kubernetes name/);
  assert.throws(() => toPod(pod({ metadata: { name: 'x'.repeat(254) } }), PLAIN), (err: unknown) => err instanceof InvalidObjectError && err.field === 'metadata.name' && err.message.length < 700);
});
