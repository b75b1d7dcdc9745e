// Property tests: whatever a config source delivers, a converter either converts
// it or rejects it with an InvalidObjectError naming the object and the field;
// and whatever text a config file holds, the file source never throws, the
// other files still apply, and what the model accepts a node can decode.
// Objects are valid ones of each kind with random fields replaced, removed or
// added, so the generator reaches the fields each converter really reads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { InvalidObjectError } from '../core/errors.ts';
import { meshService, updateFromWire, updateToMessages, type WireUpdate } from '../core/wire.ts';
import type { KubeObject } from './source.ts';
import { describeObject } from './fields.ts';
import { toPod } from './pod.ts';
import { toService } from './service.ts';
import { toNamespace } from './namespace.ts';
import { toEndpointSlice } from './endpoint-slice.ts';
import { toHttpRoute } from './httproute.ts';
import { toGrpcRoute } from './grpcroute.ts';
import { toReferenceGrant } from './referencegrant.ts';
import { toAuthorizationPolicy } from './authorization-policy.ts';
import { FileSource } from './file-source.ts';
import { MeshModel } from './mesh-model.ts';

interface Kind {
  kind: string;
  valid(): KubeObject;
  convert(obj: KubeObject): unknown;
}

const KINDS: Kind[] = [
  {
    kind: 'Pod',
    valid: () => ({
      apiVersion: 'v1', kind: 'Pod',
      metadata: {
        name: 'web-7d9f8c6b5-x2x4z', namespace: 'demo', uid: 'uid-1', labels: { app: 'web', 'pod-template-hash': '7d9f8c6b5' },
        annotations: { 'nodemesh.io/mesh': 'enabled' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d9f8c6b5', controller: true }],
      },
      spec: { nodeName: 'node-1', serviceAccountName: 'web', hostNetwork: false, containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
      status: { phase: 'Running', podIP: '10.244.1.10', conditions: [{ type: 'Ready', status: 'True' }] },
    }),
    convert: (obj) => toPod(obj, { name: 'demo', enrolled: true, mtlsMode: 'strict' }),
  },
  {
    kind: 'Service',
    valid: () => ({
      apiVersion: 'v1', kind: 'Service',
      metadata: { name: 'web', namespace: 'demo', annotations: { 'nodemesh.io/opaque-ports': '3306' } },
      spec: { clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP', appProtocol: 'http' }] },
    }),
    convert: toService,
  },
  {
    kind: 'Namespace',
    valid: () => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo', annotations: { 'nodemesh.io/mesh': 'enabled', 'nodemesh.io/mtls-mode': 'strict' } } }),
    convert: toNamespace,
  },
  {
    kind: 'EndpointSlice',
    valid: () => ({
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-abc', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4', endpoints: [{ addresses: ['10.244.1.10'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-1', uid: 'uid-1' } }],
    }),
    convert: toEndpointSlice,
  },
  {
    kind: 'HTTPRoute',
    valid: () => ({
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute',
      metadata: { name: 'canary', namespace: 'demo', creationTimestamp: '2025-01-01T00:00:00Z' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }],
        hostnames: ['web.demo.svc'],
        rules: [{
          matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'true' }], queryParams: [{ name: 'v', value: '2' }], method: 'GET' }],
          filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-env', value: 'canary' }], add: [{ name: 'x-hop', value: '1' }], remove: ['x-debug'] } }],
          backendRefs: [{ name: 'web', port: 80, weight: 90 }, { name: 'web-canary', port: 80, weight: 10 }],
          timeouts: { request: '10s', backendRequest: '5s' },
        }],
      },
    }),
    convert: (obj) => toHttpRoute(obj, () => true),
  },
  {
    kind: 'GRPCRoute',
    valid: () => ({
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute',
      metadata: { name: 'split', namespace: 'demo', creationTimestamp: '2025-01-01T00:00:00Z' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'greeter', port: 50051 }],
        rules: [{
          matches: [{ method: { type: 'RegularExpression', service: 'pkg\\..+', method: 'Say.*' }, headers: [{ name: 'x-tier', value: 'gold' }] }],
          filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'shadow', port: 50051 } } }],
          backendRefs: [{ name: 'a', port: 50051, weight: 70, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-to', value: 'a' }] } }] }, { name: 'b', namespace: 'other', port: 50051, weight: 30 }],
        }],
      },
    }),
    convert: (obj) => toGrpcRoute(obj, () => true, () => true),
  },
  {
    kind: 'ReferenceGrant',
    valid: () => ({
      apiVersion: 'gateway.networking.k8s.io/v1beta1', kind: 'ReferenceGrant', metadata: { name: 'front', namespace: 'demo' },
      spec: { from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'front' }], to: [{ group: '', kind: 'Service', name: 'web' }] },
    }),
    convert: toReferenceGrant,
  },
  {
    kind: 'AuthorizationPolicy',
    valid: () => ({
      apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'allow-client', namespace: 'demo' },
      spec: {
        selector: { matchLabels: { app: 'web' } }, action: 'ALLOW',
        rules: [{
          from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'], namespaces: ['demo'], ipBlocks: ['10.244.0.0/16'] } }],
          to: [{ operation: { ports: ['8080'], methods: ['GET'], paths: ['/api'] } }],
        }],
      },
    }),
    convert: toAuthorizationPolicy,
  },
];

type Path = (string | number)[];

/** Every path in `value` (the root excluded), children after their parents. */
function pathsOf(value: unknown, prefix: Path = []): Path[] {
  if (typeof value !== 'object' || value === null) return [];
  const out: Path[] = [];
  for (const [k, v] of Object.entries(value)) {
    const path = [...prefix, Array.isArray(value) ? Number(k) : k];
    out.push(path, ...pathsOf(v, path));
  }
  return out;
}

function nested(depth: number, asList: boolean): unknown {
  let v: unknown = 'leaf';
  for (let i = 0; i < depth; i++) v = asList ? [v] : { a: v };
  return v;
}

function cyclic(): unknown {
  const o: Record<string, unknown> = { name: 'x', port: 80 };
  o.self = o;
  o.list = [o];
  return o;
}

// Values a hostile file or API object can hold, and some beyond (a Map, a Set,
// bytes are what YAML's !!omap, !!set and !!binary give).
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.anything({ maxDepth: 3, withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true, withBoxedValues: true, withObjectString: true, key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'toString', 'valueOf', 'name', 'kind', 'type', 'value', 'port')) }), weight: 6 },
  { arbitrary: fc.constantFrom<unknown>(null, undefined, '', 0, -1, 1.5, NaN, Infinity, 65536, 2 ** 53, true, 'true', 'false', 'None', '10.0.0.1', '::1', '/', '*', 'a/b', 'Upper', '8080', 'x'.repeat(5000), [], {}, [null], [[]], [{}]), weight: 4 },
  { arbitrary: fc.tuple(fc.integer({ min: 1, max: 5000 }), fc.boolean()).map(([d, list]) => nested(d, list)), weight: 1 },
  { arbitrary: fc.constant(null).map(cyclic), weight: 1 },
  { arbitrary: fc.constant(null).map(() => Array.from({ length: 20_000 }, (_, i) => `v${i}`)), weight: 1 },
);

// What YAML can hold, kept small: a file of it is parsed on every run.
const yamlValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 6 },
  { arbitrary: fc.constantFrom<unknown>(null, '', 0, -1, 1.5, 65536, true, 'true', 'None', '10.0.0.1', '/', 'a/b', 'Upper', '8080', [], {}, [null]), weight: 4 },
  { arbitrary: fc.tuple(fc.integer({ min: 1, max: 100 }), fc.boolean()).map(([d, list]) => nested(d, list)), weight: 1 },
  { arbitrary: fc.constant(null).map(cyclic), weight: 1 },
);

type Mutation = { op: 'set' | 'delete' | 'add'; at: number; key: string; value: unknown };

function mutations(value: fc.Arbitrary<unknown>): fc.Arbitrary<Mutation[]> {
  return fc.array(fc.record({
    op: fc.constantFrom<Mutation['op']>('set', 'set', 'set', 'delete', 'add'),
    at: fc.nat(),
    key: fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('__proto__', 'spec', 'metadata', 'status', 'extra')),
    value,
  }), { minLength: 1, maxLength: 3 });
}

/**
 * `obj` with each mutation applied at one of its valid form's paths (picked by
 * `at`; a path a previous mutation removed is skipped); the paths touched.
 */
function mutate(obj: KubeObject, mutations: Mutation[]): { obj: KubeObject; touched: Path[] } {
  const touched: Path[] = [];
  const paths = pathsOf(obj);
  for (const m of mutations) {
    const target = m.op === 'add' ? [...(paths[m.at % (paths.length + 1)] ?? []), m.key] : paths[m.at % paths.length]!;
    const parent = target.slice(0, -1).reduce<unknown>((v, k) => (v as Record<string | number, unknown>)?.[k], obj);
    if (typeof parent !== 'object' || parent === null || Object.isFrozen(parent)) continue;
    const last = target[target.length - 1]!;
    try {
      if (m.op === 'delete') delete (parent as Record<string | number, unknown>)[last];
      else Object.defineProperty(parent, last, { value: m.value, enumerable: true, writable: true, configurable: true });
    } catch {
      continue; // a typed array's element, a boxed string's character: not a field a source can set
    }
    touched.push(target);
  }
  return { obj, touched };
}

test('property: any mutation of a valid object of any kind converts or is an InvalidObjectError naming the object and a field under what changed', () => {
  fc.assert(
    fc.property(fc.constantFrom(...KINDS), mutations(hostileValue), (kind, changes) => {
      const { obj, touched } = mutate(kind.valid(), changes);
      try {
        kind.convert(obj);
      } catch (err) {
        assert.ok(err instanceof InvalidObjectError, `${kind.kind}: not an InvalidObjectError: ${(err as Error)?.stack ?? String(err)}`);
        assert.equal(err.object, describeObject(obj));
        assert.match(err.field, /^[A-Za-z]/, 'the error names a field');
        // The field is under a top-level field that was changed: the error points at the change.
        const root = /^[A-Za-z]+/.exec(err.field)![0];
        assert.ok(touched.some((p) => p[0] === root), `${err.message}: field ${err.field} is not under any change (${JSON.stringify(touched)})`);
      }
    }),
    { numRuns: 3000 },
  );
});

test('property: an unmutated object of every kind converts (the generator starts from valid objects)', () => {
  for (const kind of KINDS) assert.doesNotThrow(() => kind.convert(kind.valid()), kind.kind);
});

const GOOD = [
  'apiVersion: v1\nkind: Namespace\nmetadata: { name: demo, annotations: { nodemesh.io/mesh: enabled } }',
  'apiVersion: v1\nkind: Pod\nmetadata: { name: good, namespace: demo, uid: uid-good }\nspec: { nodeName: node-1 }\nstatus: { podIP: 10.244.9.9 }',
].join('\n---\n');

// Text that is YAML-shaped more often than random text is: indicators, anchors,
// aliases, tags, document markers and the start of real objects.
const yamlish: fc.Arbitrary<string> = fc.array(fc.oneof(
  fc.constantFrom('---\n', '...\n', '- ', ': ', '? ', '[', ']', '{', '}', ', ', '&a ', '*a ', '&b ', '*b', '"', "'", '|\n', '>-\n', '\n', '  ', '    ', '#c\n',
    '!!binary ', '!!set ', '!!omap ', '!foo ', '%YAML 1.2\n', '%TAG ! tag:x,2000:\n', 'null', '~', '<<: ', '\t', '\u0000', '\uFEFF', 'x',
    'apiVersion: v1\n', 'kind: Pod\n', 'kind: Service\n', 'kind: HTTPRoute\n', 'metadata:\n', '  name: p\n', '  namespace: demo\n', 'spec:\n', 'status: { podIP: 10.244.9.9 }\n'),
  fc.string({ maxLength: 10 }),
), { maxLength: 60 }).map((parts) => parts.join(''));

// Valid YAML of a mutated object: the converters behind the file source.
const mutatedYaml: fc.Arbitrary<string> = fc.tuple(fc.constantFrom(...KINDS), mutations(yamlValue)).map(([kind, changes]) => {
  const { obj } = mutate(kind.valid(), changes);
  try {
    return stringify(obj, { aliasDuplicateObjects: true });
  } catch {
    return '';
  }
});

const fileText: fc.Arbitrary<string> = fc.oneof(fc.string({ maxLength: 200 }), yamlish, mutatedYaml, fc.array(mutatedYaml, { maxLength: 4 }).map((docs) => docs.join('\n---\n')));

const WATCH = meshService().service.Watch!;

test('property: any text in config files never stops the file source; the other files apply and nodes can decode what the model accepts', async () => {
  const root = await mkdtemp(join(tmpdir(), 'nodemesh-property-'));
  try {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fileText, { minLength: 1, maxLength: 3 }), async (texts) => {
        const dir = join(root, String(run++));
        await mkdir(dir);
        // Its path sorts first: a fuzzed copy of its objects loses to it.
        await writeFile(join(dir, 'a-good.yaml'), GOOD);
        for (const [i, text] of texts.entries()) await writeFile(join(dir, `z-${i}.yaml`), text);
        const model = new MeshModel();
        const source = new FileSource(dir, { limits: { nodes: 5_000 } });
        try {
          await source.start(model);
          await model.whenSynced();
          assert.ok(model.workloadByUid('uid-good'), 'the good file applies');
          for (const r of model.rejected()) {
            assert.ok(r.origin.startsWith(dir) && r.object && r.reason, `a rejection names its file, object and reason: ${JSON.stringify(r)}`);
          }
          // As the gRPC server sends it, and as a node reads it.
          for (const message of updateToMessages(model.snapshotFor())) {
            const decoded = WATCH.responseDeserialize(WATCH.responseSerialize(message)) as WireUpdate;
            assert.deepEqual(updateFromWire(decoded).rejected, [], 'a node accepts everything the control plane accepted');
          }
        } finally {
          await source.stop();
        }
      }),
      { numRuns: 100 },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
