// Pod -> Workload. A pod becomes a workload once it has an IP and until it
// terminates; host-network pods never do, since they share the node's IP and
// capture by IP would take the node's own traffic.

import { createHash } from 'node:crypto';
import type { Workload } from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, fieldPath } from './fields.ts';
import { MAX_CONCURRENT_REQUESTS_ANNOTATION, MAX_CONNECTIONS_ANNOTATION, MAX_POD_LIMIT, MESH_ANNOTATION, MESH_VALUES } from './annotations.ts';
import type { MeshNamespace } from './namespace.ts';

export interface MeshPod {
  workload: Workload;
  /** The pod's Ready condition is not False: it may receive Service traffic. */
  ready: boolean;
}

const TERMINAL_PHASES = new Set(['Succeeded', 'Failed']);

/** Validates a Pod; null when it is valid but is no workload (no IP yet, terminated, host network). */
export function toPod(obj: KubeObject, namespace: MeshNamespace): MeshPod | null {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj);
  const ns = meta.namespace || 'default';
  const labels = f.stringMap(meta.fields.labels, 'metadata.labels');
  const annotations = f.stringMap(meta.fields.annotations, 'metadata.annotations');
  const uid = f.string(meta.fields.uid, 'metadata.uid');
  const owner = controllingOwner(f, meta.fields.ownerReferences);
  const spec = f.record(obj.spec, 'spec') ?? {};
  const status = f.record(obj.status, 'status') ?? {};

  const podMesh = f.oneOf(annotations[MESH_ANNOTATION], fieldPath('metadata.annotations', MESH_ANNOTATION), MESH_VALUES);
  const node = f.string(spec.nodeName, 'spec.nodeName') ?? '';
  const serviceAccount = f.string(spec.serviceAccountName, 'spec.serviceAccountName') || 'default';
  // It is the identity's last path segment: spiffe://<trust-domain>/ns/<namespace>/sa/<this>.
  f.dnsName(serviceAccount, 'spec.serviceAccountName', false);
  const ip = f.ip(status.podIP, 'status.podIP') ?? '';
  const namedPorts = containerPorts(f, spec);
  const phase = f.string(status.phase, 'status.phase');
  const hostNetwork = f.boolean(spec.hostNetwork, 'spec.hostNetwork') ?? false;
  const maxConnections = podLimit(f, annotations, MAX_CONNECTIONS_ANNOTATION);
  const maxConcurrentRequests = podLimit(f, annotations, MAX_CONCURRENT_REQUESTS_ANNOTATION);

  if (!ip || hostNetwork || (phase && TERMINAL_PHASES.has(phase))) return null;
  const workload: Workload = {
    uid: uid || derivedUid(ns, meta.name),
    namespace: ns,
    name: meta.name,
    workloadName: workloadName(owner, labels, meta.name),
    serviceAccount,
    node,
    ip,
    labels,
    enrolled: podMesh ? podMesh === 'enabled' : namespace.enrolled,
    mtlsMode: namespace.mtlsMode,
    namedPorts,
  };
  if (maxConnections !== undefined) workload.maxConnections = maxConnections;
  if (maxConcurrentRequests !== undefined) workload.maxConcurrentRequests = maxConcurrentRequests;
  return { workload, ready: readyCondition(f, status) };
}

/** A per-pod limit annotation: a whole number from 1 to MAX_POD_LIMIT, written in decimal digits. */
function podLimit(f: FieldReader, annotations: Record<string, string>, name: string): number | undefined {
  const value = annotations[name];
  if (value === undefined) return undefined;
  const path = fieldPath('metadata.annotations', name);
  const n = /^[0-9]{1,7}$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!(n >= 1 && n <= MAX_POD_LIMIT)) f.fail(path, `must be a whole number from 1 to ${MAX_POD_LIMIT}, got ${JSON.stringify(value)}`);
  return n;
}

function containerPorts(f: FieldReader, spec: Record<string, unknown>): Record<string, number> {
  const named: Record<string, number> = {};
  f.array(spec.containers, 'spec.containers').forEach((c, ci) => {
    const container = f.record(c, `spec.containers[${ci}]`) ?? {};
    f.array(container.ports, `spec.containers[${ci}].ports`).forEach((p, pi) => {
      const path = `spec.containers[${ci}].ports[${pi}]`;
      const port = f.record(p, path) ?? {};
      const number = f.port(port.containerPort, `${path}.containerPort`);
      if (number === undefined) f.fail(`${path}.containerPort`, 'required');
      const name = f.string(port.name, `${path}.name`);
      if (name) named[name] = number;
    });
  });
  return named;
}

function readyCondition(f: FieldReader, status: Record<string, unknown>): boolean {
  for (const [i, c] of f.array(status.conditions, 'status.conditions').entries()) {
    const condition = f.record(c, `status.conditions[${i}]`) ?? {};
    if (condition.type === 'Ready') return condition.status !== 'False';
  }
  return true;
}

/**
 * The owning workload's name, as Istio reports it: a ReplicaSet's Deployment
 * (its name minus the pod-template-hash), a StatefulSet, DaemonSet or Job; else
 * the app labels; else the pod's own name.
 */
function workloadName(owner: Owner | undefined, labels: Record<string, string>, podName: string): string {
  if (owner?.name) {
    if (owner.kind === 'ReplicaSet') return deploymentOf(owner.name, labels['pod-template-hash']);
    return owner.name;
  }
  return labels['app.kubernetes.io/name'] || labels.app || podName;
}

interface Owner {
  kind: string;
  name: string;
}

/** The ownerReference marked controller, else the first one. */
function controllingOwner(f: FieldReader, value: unknown): Owner | undefined {
  const owners = f.array(value, 'metadata.ownerReferences').map((o, i) => {
    const path = `metadata.ownerReferences[${i}]`;
    const ref = f.record(o, path) ?? {};
    return {
      kind: f.string(ref.kind, `${path}.kind`) ?? '',
      name: f.string(ref.name, `${path}.name`) ?? '',
      controller: f.boolean(ref.controller, `${path}.controller`) ?? false,
    };
  });
  return owners.find((o) => o.controller) ?? owners[0];
}

function deploymentOf(replicaSet: string, templateHash: string | undefined): string {
  if (templateHash && replicaSet.endsWith(`-${templateHash}`)) return replicaSet.slice(0, -templateHash.length - 1);
  const m = /^(.+)-[a-z0-9]{5,10}$/.exec(replicaSet);
  return m ? m[1]! : replicaSet;
}

/** File-mode pods often omit metadata.uid: derive one that stays the same across restarts. */
function derivedUid(namespace: string, name: string): string {
  const h = createHash('sha256').update(`pod/${namespace}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
