// A kustomize renderer for the kustomizations of this repository, so their test
// needs no kubectl: what `kubectl kustomize DIR` makes of manifests/ and
// examples/kubernetes/, as objects. It does the part of kustomize those files
// use — resources (files and directories), namespace, labels (pairs, metadata
// only), images, and the output order — and refuses any other field or option
// rather than render it differently. manifests/rendered.golden.yaml was
// rendered by kustomize itself, and the manifests test checks that this gives
// the same objects in the same order.

import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
} & Record<string, any>;

export class KustomizeError extends Error {}

interface Kustomization {
  apiVersion?: string;
  kind?: string;
  resources?: string[];
  namespace?: string;
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }[];
  images?: { name: string; newName?: string; newTag?: string; digest?: string }[];
}

const FIELDS = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'labels', 'images']);

/** Kinds without a namespace (kustomize's built-in schema, the ones a mesh install may carry). */
const CLUSTER_SCOPED = new Set([
  'Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'PersistentVolume', 'StorageClass',
  'PriorityClass', 'IngressClass', 'RuntimeClass', 'CSIDriver', 'APIService', 'MutatingWebhookConfiguration',
  'ValidatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'GatewayClass', 'Node',
]);

/** kustomize's legacy output order (the default): these kinds first, in this order; then the rest; then the webhooks. */
const ORDER_FIRST = [
  'Namespace', 'ResourceQuota', 'StorageClass', 'CustomResourceDefinition', 'ServiceAccount', 'PodSecurityPolicy',
  'Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding', 'ConfigMap', 'Secret', 'Endpoints', 'Service',
  'LimitRange', 'PriorityClass', 'PersistentVolume', 'PersistentVolumeClaim', 'Deployment', 'StatefulSet', 'CronJob',
  'PodDisruptionBudget',
];
const ORDER_LAST = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'];

/** The objects `kubectl kustomize dir` renders, in its order. */
export function kustomize(dir: string): KubeObject[] {
  const where = join(dir, 'kustomization.yaml');
  const k = parseYaml(readFileSync(where, 'utf8'), where)[0] as Kustomization | undefined;
  if (!k || typeof k !== 'object') throw new KustomizeError(`${where}: not a kustomization`);
  const unknown = Object.keys(k).filter((f) => !FIELDS.has(f));
  if (unknown.length) throw new KustomizeError(`${where}: ${unknown.join(', ')}: not rendered by this renderer (extend manifests/testdata/kustomize.ts)`);
  if (k.kind !== 'Kustomization') throw new KustomizeError(`${where}: kind ${k.kind}, not Kustomization`);

  const objects: KubeObject[] = [];
  for (const resource of k.resources ?? []) {
    const path = join(dir, resource);
    if (statSync(path).isDirectory()) objects.push(...kustomize(path));
    else objects.push(...(parseYaml(readFileSync(path, 'utf8'), path) as KubeObject[]));
  }
  for (const obj of objects) {
    if (k.namespace !== undefined) setNamespace(obj, k.namespace, where);
    for (const set of k.labels ?? []) addLabels(obj, set, where);
    for (const image of k.images ?? []) setImage(obj, image);
  }
  const seen = new Set<string>();
  for (const obj of objects) {
    const id = `${obj.apiVersion} ${obj.kind} ${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (seen.has(id)) throw new KustomizeError(`${where}: ${id} is defined twice`);
    seen.add(id);
  }
  return objects.sort(legacyOrder);
}

function parseYaml(text: string, where: string): unknown[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length) throw new KustomizeError(`${where}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as unknown;
    return value === null || value === undefined ? [] : [value];
  });
}

function setNamespace(obj: KubeObject, namespace: string, where: string): void {
  if (!CLUSTER_SCOPED.has(obj.kind)) obj.metadata.namespace = namespace;
  if (obj.kind !== 'RoleBinding' && obj.kind !== 'ClusterRoleBinding') return;
  // kustomize moves ServiceAccount subjects of the default namespace, or with none, into its namespace;
  // the manifests name theirs, which kustomize leaves as they are.
  for (const subject of (obj.subjects ?? []) as { kind: string; namespace?: string }[]) {
    if (subject.kind === 'ServiceAccount' && (subject.namespace === undefined || subject.namespace === 'default')) {
      throw new KustomizeError(`${where}: ${obj.kind} ${obj.metadata.name}: a ServiceAccount subject without its namespace is not rendered by this renderer; name the namespace`);
    }
  }
}

function addLabels(obj: KubeObject, set: NonNullable<Kustomization['labels']>[number], where: string): void {
  const options = Object.keys(set).filter((o) => o !== 'pairs');
  if (options.some((o) => (set as Record<string, unknown>)[o] !== false)) {
    throw new KustomizeError(`${where}: labels with ${options.join(', ')}: not rendered by this renderer (it adds labels to metadata only)`);
  }
  obj.metadata.labels = { ...obj.metadata.labels, ...set.pairs };
}

/** Images of containers and init containers wherever they are (pods, templates, job templates). */
function setImage(node: unknown, image: NonNullable<Kustomization['images']>[number]): void {
  if (Array.isArray(node)) {
    for (const item of node) setImage(item, image);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    if ((key === 'containers' || key === 'initContainers') && Array.isArray(value)) {
      for (const container of value as { image?: string }[]) {
        if (typeof container.image === 'string') container.image = renamed(container.image, image);
      }
    } else {
      setImage(value, image);
    }
  }
}

function renamed(ref: string, image: NonNullable<Kustomization['images']>[number]): string {
  // name[:tag][@digest]; a registry's port is in the name, before the last '/'.
  const at = ref.indexOf('@');
  const beforeDigest = at >= 0 ? ref.slice(0, at) : ref;
  const colon = beforeDigest.lastIndexOf(':');
  const hasTag = colon > beforeDigest.lastIndexOf('/');
  const name = hasTag ? beforeDigest.slice(0, colon) : beforeDigest;
  if (name !== image.name) return ref;
  const tag = hasTag ? beforeDigest.slice(colon) : '';
  const digest = at >= 0 ? ref.slice(at) : '';
  const newName = image.newName ?? name;
  if (image.digest !== undefined) return `${newName}@${image.digest}`;
  if (image.newTag !== undefined) return `${newName}:${image.newTag}`;
  return `${newName}${tag}${digest}`;
}

function rank(kind: string): number {
  const first = ORDER_FIRST.indexOf(kind);
  if (first >= 0) return first - ORDER_FIRST.length;
  const last = ORDER_LAST.indexOf(kind);
  return last >= 0 ? 1 + last : 0;
}

function gvk(obj: KubeObject): string {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/', 2) : ['', obj.apiVersion];
  return `${group || '~G'}_${version || '~V'}_${obj.kind}`;
}

function legacyOrder(a: KubeObject, b: KubeObject): number {
  const byRank = rank(a.kind) - rank(b.kind);
  if (byRank !== 0) return byRank;
  const [ga, gb] = [gvk(a), gvk(b)];
  if (ga !== gb) return ga < gb ? -1 : 1;
  const [ia, ib] = [`${a.metadata.namespace ?? ''}|${a.metadata.name}`, `${b.metadata.namespace ?? ''}|${b.metadata.name}`];
  return ia < ib ? -1 : ia > ib ? 1 : 0;
}
