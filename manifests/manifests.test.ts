// The install manifests and the Kubernetes examples, rendered as kustomize
// (`kubectl apply -k`) renders them — by our own renderer of the kustomize
// features they use (testdata/kustomize.ts), so the test needs no kubectl — and
// checked against the Kubernetes OpenAPI schemas (kubernetes-models), the Gateway
// API schemas, and our own CRD's schema.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { Ajv } from 'ajv';
import { NODE_PROCESS_ENV, NODE_V8_FLAGS } from '../agent/v8-flags.ts';
import { kustomize, KustomizeError, type KubeObject as Obj } from './testdata/kustomize.ts';

const MANIFESTS = fileURLToPath(new URL('.', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../examples/kubernetes/', import.meta.url));
const GOLDEN = fileURLToPath(new URL('./rendered.golden.yaml', import.meta.url));
const DOCKERFILE = fileURLToPath(new URL('../Dockerfile', import.meta.url));

function objects(yamlText: string): Obj[] {
  return parseAllDocuments(yamlText).map((d) => {
    if (d.errors.length) throw new Error(`rendered YAML does not parse: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  });
}

const base = kustomize(MANIFESTS);
const find = (list: Obj[], kind: string, name: string): Obj => {
  const found = list.find((o) => o.kind === kind && o.metadata.name === name);
  assert.ok(found, `${kind} ${name} is in the rendered output`);
  return found;
};

/** Validates with the model class of the object's apiVersion/kind, from kubernetes-models or the Gateway API models. */
async function validateWithModel(obj: Obj): Promise<void> {
  const pkg = obj.apiVersion.startsWith('gateway.networking.k8s.io/') ? '@kubernetes-models/gateway-api' : 'kubernetes-models';
  const module = (await import(`${pkg}/${obj.apiVersion}/${obj.kind}`)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = module[obj.kind];
  assert.ok(Model, `${pkg} has a model for ${obj.apiVersion} ${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${obj.kind} ${obj.metadata.name} does not validate: ${(err as Error).message}`, { cause: err });
  }
}

const crd = find(base, 'CustomResourceDefinition', 'authorizationpolicies.security.nodemesh.io');
const policySchema = crd.spec.versions.find((v: { name: string }) => v.name === 'v1alpha1').schema.openAPIV3Schema;

/**
 * The CRD schema as the API server applies it with server-side field validation
 * (kubectl's default --validate=strict): unknown fields are errors. Ajv does not
 * know the x-kubernetes-* keywords, hence strict: false.
 */
function policyValidator(): (policy: unknown) => string[] {
  const closed = structuredClone(policySchema);
  const close = (s: Record<string, any>): void => {
    if (s.properties && s.additionalProperties === undefined && s !== closed) s.additionalProperties = false;
    for (const sub of Object.values(s.properties ?? {})) close(sub as Record<string, any>);
    if (s.items) close(s.items);
  };
  close(closed);
  closed.properties.metadata = { type: 'object' };
  const check = new Ajv({ strict: false, allErrors: true }).compile(closed);
  return (policy) => (check(policy) ? [] : (check.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}

test('kustomize renders the base, and every object validates against the Kubernetes OpenAPI schemas', async () => {
  assert.deepEqual(base.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
    'ClusterRole/nodemesh-controlplane',
    'ClusterRoleBinding/nodemesh-controlplane',
    'CustomResourceDefinition/authorizationpolicies.security.nodemesh.io',
    'DaemonSet/nodemesh-node',
    'Deployment/nodemesh-controlplane',
    'Namespace/nodemesh-system',
    'PodDisruptionBudget/nodemesh-controlplane',
    'Role/nodemesh-controlplane',
    'RoleBinding/nodemesh-controlplane',
    'Service/nodemesh-controlplane',
    'ServiceAccount/nodemesh-controlplane',
    'ServiceAccount/nodemesh-node',
  ]);
  for (const o of base) {
    await validateWithModel(o);
    if (o.kind !== 'Namespace' && o.kind !== 'CustomResourceDefinition' && !o.kind.startsWith('Cluster')) assert.equal(o.metadata.namespace, 'nodemesh-system', `${o.kind} ${o.metadata.name} namespace`);
  }
});

test('the node DaemonSet has the security settings and wiring the node needs, one by one', () => {
  const ds = find(base, 'DaemonSet', 'nodemesh-node');
  const pod = ds.spec.template.spec;
  const [c] = pod.containers;
  const sc = c.securityContext;
  assert.equal(pod.serviceAccountName, 'nodemesh-node');
  assert.equal(pod.automountServiceAccountToken, false, 'the agent gets only the nodemesh-audience token');
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(pod.priorityClassName, 'system-node-critical');
  // SYS_ADMIN for setns into pod namespaces (in-pod capture); not privileged.
  assert.deepEqual(sc.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN'] });
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.runAsUser, 0, 'capabilities reach uid 0 only');
  assert.equal(sc.privileged, undefined);
  assert.deepEqual(c.env.find((e: { name: string }) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  assert.ok(c.args.includes('--node-name=$(NODE_NAME)'));
  // The image's entrypoint, with agent/v8-flags.ts between node and the bundle.
  const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(readFileSync(DOCKERFILE, 'utf8'))![1]!) as string[];
  assert.deepEqual(c.command, [entrypoint[0], ...NODE_V8_FLAGS, ...entrypoint.slice(1)], 'the DaemonSet starts nodes with agent/v8-flags.ts');
  assert.equal(c.env.find((e: { name: string }) => e.name === 'NODE_OPTIONS'), undefined, 'the V8 flags are in the command, once');
  for (const [name, value] of Object.entries(NODE_PROCESS_ENV)) {
    assert.equal(c.env.find((e: { name: string }) => e.name === name)?.value, value, `the DaemonSet sets ${name} as agent/v8-flags.ts says`);
  }

  const mountOf = (flag: string) => c.args.find((a: string) => a.startsWith(`${flag}=`))?.slice(flag.length + 1) as string;
  const volumeAt = (file: string) => {
    const mount = c.volumeMounts.find((m: { mountPath: string }) => file.startsWith(`${m.mountPath}/`) || file === m.mountPath);
    assert.ok(mount, `${file} is on a mounted volume`);
    return { mount, volume: pod.volumes.find((v: { name: string }) => v.name === mount.name) };
  };
  const token = volumeAt(mountOf('--token-file'));
  const source = token.volume.projected.sources[0].serviceAccountToken;
  assert.equal(source.audience, 'nodemesh');
  assert.equal(`${token.mount.mountPath}/${source.path}`, mountOf('--token-file'));
  const ca = volumeAt(mountOf('--ca-file'));
  assert.equal(ca.volume.configMap.name, 'nodemesh-trust-bundle');
  assert.equal(mountOf('--ca-file'), `${ca.mount.mountPath}/ca.crt`);
  assert.deepEqual(volumeAt(mountOf('--state-dir')).volume.emptyDir, {});
  const lock = volumeAt('/run/xtables.lock');
  assert.deepEqual(lock.volume.hostPath, { path: '/run/xtables.lock', type: 'FileOrCreate' });
  // The node's default --pod-netns-dir: the runtime's pod namespaces, including pods created later.
  const netns = volumeAt('/var/run/netns');
  assert.deepEqual(netns.volume.hostPath, { path: '/var/run/netns', type: 'DirectoryOrCreate' });
  assert.equal(netns.mount.mountPropagation, 'HostToContainer');
  assert.ok(mountOf('--controlplane').startsWith('nodemesh-controlplane.nodemesh-system.svc:15010'));

  assert.deepEqual(c.readinessProbe.httpGet, { path: '/healthz/ready', port: 15021 });
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  // Surge: the new daemon serves beside the old one before it stops; hence no hostPorts either.
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  assert.equal(c.ports, undefined, 'a hostNetwork pod\'s ports are hostPorts, which keep the surge pod off the node');
  const certDir = volumeAt('/run/nodemesh/certs');
  assert.deepEqual(certDir.volume.emptyDir, { medium: 'Memory', sizeLimit: '16Mi' }, 'keys never reach a disk');
  // The node drains for up to 20 s on SIGTERM (cli/node.ts); the grace period leaves room to stop after it.
  assert.equal(pod.terminationGracePeriodSeconds, 30);
  assert.equal(ds.spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.equal(ds.spec.template.metadata.annotations['prometheus.io/port'], '15020');
});

test('the control plane runs 2 non-root replicas with a read-only root, no capabilities, probes and resources', () => {
  const deploy = find(base, 'Deployment', 'nodemesh-controlplane');
  const pod = deploy.spec.template.spec;
  const [c] = pod.containers;
  assert.equal(deploy.spec.replicas, 2);
  assert.deepEqual(c.args.slice(0, 2), ['controlplane', '--source=kubernetes']);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });
  assert.ok(c.readinessProbe && c.livenessProbe, 'probed');
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
  const svc = find(base, 'Service', 'nodemesh-controlplane');
  assert.equal(svc.spec.ports[0].port, 15010);
  assert.equal(find(base, 'PodDisruptionBudget', 'nodemesh-controlplane').spec.minAvailable, 1);
});

test('RBAC: the control plane reads the mesh kinds and reviews tokens; the node ServiceAccount has no binding', () => {
  const rules = find(base, 'ClusterRole', 'nodemesh-controlplane').rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  const allows = (group: string, resource: string, verb: string) => rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
  for (const [group, resource] of [['', 'namespaces'], ['', 'pods'], ['', 'services'], ['discovery.k8s.io', 'endpointslices'], ['gateway.networking.k8s.io', 'httproutes'], ['gateway.networking.k8s.io', 'grpcroutes'], ['gateway.networking.k8s.io', 'referencegrants'], ['security.nodemesh.io', 'authorizationpolicies']] as const) {
    for (const verb of ['get', 'list', 'watch']) assert.ok(allows(group, resource, verb), `${verb} ${group}/${resource}`);
  }
  assert.ok(allows('authentication.k8s.io', 'tokenreviews', 'create'));
  for (const resource of ['httproutes/status', 'grpcroutes/status']) assert.ok(allows('gateway.networking.k8s.io', resource, 'patch'), `patch ${resource}`);
  assert.ok(!rules.some((r) => r.resources.some((x) => x === 'httproutes' || x === 'grpcroutes') && r.verbs.some((v) => v === 'patch' || v === 'update')), 'routes themselves are never written, only their status');
  assert.ok(!rules.some((r) => r.resources.includes('secrets')), 'no cluster-wide access to Secrets');
  const role = find(base, 'Role', 'nodemesh-controlplane').rules as { resources: string[]; resourceNames?: string[]; verbs: string[] }[];
  assert.deepEqual(role.find((r) => r.resources.includes('secrets') && r.verbs.includes('get'))?.resourceNames, ['nodemesh-ca']);
  assert.ok(!role.some((r) => r.resources.includes('secrets') && r.verbs.some((v) => v === 'update' || v === 'delete' || v === 'patch')), 'the CA Secret is never overwritten');
  const bound = base.filter((o) => o.kind.endsWith('Binding')).flatMap((b) => b.subjects.map((s: { name: string }) => s.name));
  assert.ok(!bound.includes('nodemesh-node'));
});

test('examples validate: core kinds with kubernetes-models, the HTTPRoute with the Gateway API models, the policy with the CRD schema', async () => {
  const examples = kustomize(EXAMPLES);
  const validatePolicy = policyValidator();
  for (const o of examples) {
    if (o.kind === 'AuthorizationPolicy') assert.deepEqual(validatePolicy(o), [], `AuthorizationPolicy ${o.metadata.name}`);
    else await validateWithModel(o);
  }
  const route = find(examples, 'HTTPRoute', 'api-canary');
  assert.deepEqual(route.spec.rules[0].backendRefs.map((b: { weight: number }) => b.weight), [90, 10]);
  const web = find(examples, 'Deployment', 'web');
  assert.equal(web.spec.template.metadata.annotations['nodemesh.io/mesh'], 'enabled');
});

test('the AuthorizationPolicy CRD schema rejects malformed policies at apply time', () => {
  const validatePolicy = policyValidator();
  const policy = (spec: unknown) => ({ apiVersion: 'security.nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace: 'shop' }, spec });
  assert.deepEqual(validatePolicy(policy({ action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8', 'fd00::/8'] } }], to: [{ operation: { ports: ['8080'] } }] }] })), []);
  const rejected: [string, unknown][] = [
    ['action outside ALLOW|DENY', { action: 'AUDIT' }],
    ['a port name instead of a number', { rules: [{ to: [{ operation: { ports: ['http'] } }] }] }],
    ['a port above 65535', { rules: [{ to: [{ operation: { notPorts: ['65536'] } }] }] }],
    ['a lower-case method', { rules: [{ to: [{ operation: { methods: ['get'] } }] }] }],
    ['a path not starting with / or *', { rules: [{ to: [{ operation: { paths: ['api'] } }] }] }],
    ['a CIDR with a bad prefix', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] }],
    ['a from entry without source', { rules: [{ from: [{}] }] }],
    ['a misspelt field', { rules: [{ to: [{ operation: { method: ['GET'] } }] }] }],
    ['a selector with non-string labels', { selector: { matchLabels: { app: 1 } } }],
  ];
  for (const [what, spec] of rejected) assert.notDeepEqual(validatePolicy(policy(spec)), [], `${what} is rejected`);
});

test('the rendered base is manifests/rendered.golden.yaml, object by object and in its order (UPDATE_GOLDEN=1 regenerates it)', () => {
  // The golden file was rendered by kustomize itself (`kubectl kustomize manifests/`, kustomize v5.5.0).
  if (process.env.UPDATE_GOLDEN === '1') {
    writeFileSync(GOLDEN, base.map((o) => stringify(o, { sortMapEntries: true, indentSeq: false, lineWidth: 0, aliasDuplicateObjects: false })).join('---\n'));
  }
  assert.deepEqual(base, objects(readFileSync(GOLDEN, 'utf8')), 'the rendered manifests changed: review them, then run with UPDATE_GOLDEN=1');
});

test('the renderer refuses what it does not render as kustomize does, rather than render it differently', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-kustomize-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const render = (kustomization: string, resources = '') => {
    writeFileSync(join(dir, 'kustomization.yaml'), `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n${kustomization}`);
    writeFileSync(join(dir, 'r.yaml'), resources);
    return () => kustomize(dir);
  };
  assert.throws(render('resources: [r.yaml]\npatches: [{path: p.yaml}]\n'), (err: Error) => err instanceof KustomizeError && /patches: not rendered/.test(err.message));
  assert.throws(render('labels: [{pairs: {a: b}, includeSelectors: true}]\nresources: [r.yaml]\n', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n'), /includeSelectors: not rendered/);
  assert.throws(render('namespace: x\nresources: [r.yaml]\n', 'apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: ServiceAccount, name: s}]\n'), /without its namespace/);
  // What it renders: namespace, labels, images (tag kept, tag replaced, digest), order by kind.
  const out = render(
    'namespace: x\nlabels: [{pairs: {a: b}}]\nresources: [r.yaml]\nimages: [{name: app, newName: reg:5000/app, newTag: "2"}, {name: side, digest: "sha256:ab"}]\n',
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {initContainers: [{name: i, image: side:1}], containers: [{name: c, image: "app:1"}, {name: o, image: other:3}]}}}\n' +
    '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n',
  )();
  assert.deepEqual(out.map((o) => `${o.kind}/${o.metadata.namespace ?? '-'}/${JSON.stringify(o.metadata.labels)}`), ['Namespace/-/{"a":"b"}', 'Deployment/x/{"a":"b"}']);
  const pod = out[1]!.spec.template.spec;
  assert.deepEqual([...pod.initContainers, ...pod.containers].map((c: { image: string }) => c.image), ['side@sha256:ab', 'reg:5000/app:2', 'other:3']);
});

test('the uninstall kustomization runs `node --uninstall` on every node with the node DaemonSet\'s capabilities, mounts and image', async () => {
  const uninstall = kustomize(fileURLToPath(new URL('./uninstall/', import.meta.url)));
  assert.deepEqual(uninstall.map((o) => `${o.kind}/${o.metadata.name}`), ['Namespace/nodemesh-uninstall', 'DaemonSet/nodemesh-uninstall']);
  for (const o of uninstall) await validateWithModel(o);
  const ds = find(uninstall, 'DaemonSet', 'nodemesh-uninstall');
  const pod = ds.spec.template.spec;
  const [init] = pod.initContainers;
  assert.deepEqual(init.args.slice(0, 2), ['node', '--uninstall']);
  assert.ok(init.args.includes('--pod-netns-dir=/var/run/netns'), 'the pods\' rules go too, not only the node\'s');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'every node, tainted or not');
  assert.equal(pod.hostNetwork, true);
  const node = find(base, 'DaemonSet', 'nodemesh-node').spec.template.spec.containers[0];
  assert.deepEqual(init.securityContext.capabilities, node.securityContext.capabilities);
  assert.equal(init.image, node.image);
  const mounts = (c: { volumeMounts: { mountPath: string; mountPropagation?: string }[] }) => c.volumeMounts.filter((m) => ['/var/run/netns', '/run/xtables.lock'].includes(m.mountPath)).map((m) => `${m.mountPath} ${m.mountPropagation ?? ''}`).sort();
  assert.deepEqual(mounts(init), mounts(node));
});
