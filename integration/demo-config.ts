// The demo's cluster, read from the same Kubernetes YAML the control plane reads
// (examples/demo): Namespaces, Pods (node, IP, labels, service account, ports)
// and Services (VIP, ports) become the network-namespace cluster's spec, so the
// addresses live in the YAML only.

import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { InvalidObjectError } from '../core/errors.ts';
import type { ClusterSpec, ContainerPortSpec, NamespaceSpec, PodSpec, ServicePortSpec, ServiceSpec } from './cluster/plan.ts';
import { planCluster } from './cluster/plan.ts';

export const DEMO_CONFIG_DIR = fileURLToPath(new URL('../examples/demo/', import.meta.url));

// Only the fields the cluster needs; the control plane validates the rest.
interface Meta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface PodYaml {
  metadata?: Meta;
  spec?: { nodeName?: string; serviceAccountName?: string; containers?: { ports?: { name?: string; containerPort?: number }[] }[] };
  status?: { podIP?: string };
}
interface ServiceYaml {
  metadata?: Meta;
  spec?: { clusterIP?: string; selector?: Record<string, string>; ports?: { name?: string; port?: number; targetPort?: number | string; appProtocol?: string }[] };
}
interface Document {
  kind?: string;
  metadata?: Meta;
}

/** Builds the cluster spec from every *.yaml of `dir` (default examples/demo). */
export function loadDemoSpec(dir = DEMO_CONFIG_DIR): ClusterSpec {
  const namespaces: NamespaceSpec[] = [];
  const pods: PodSpec[] = [];
  const services: ServiceSpec[] = [];
  for (const file of readdirSync(dir).filter((f) => ['.yaml', '.yml'].includes(extname(f))).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new InvalidObjectError(file, 'yaml', doc.errors[0]!.message);
      const obj = doc.toJS() as Document | null;
      if (!obj) continue;
      const meta = obj.metadata ?? {};
      switch (obj.kind) {
        case 'Namespace':
          namespaces.push({ name: required(file, obj, 'metadata.name', meta.name), labels: meta.labels, annotations: meta.annotations });
          break;
        case 'Pod':
          pods.push(podSpec(file, obj as PodYaml));
          break;
        case 'Service':
          services.push(serviceSpec(file, obj as ServiceYaml));
          break;
      }
    }
  }
  // Node i routes 10.244.i.0/24: the names sort into that order (node-1, node-2, ...).
  const nodeNames = [...new Set(pods.map((p) => p.node))].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  // Calico-like routed veths without an address on the host side: the shape most
  // clusters have, and the one where capture from the node's namespace fails.
  const spec: ClusterSpec = { nodes: Math.max(1, nodeNames.length), nodeNames: nodeNames.length ? nodeNames : undefined, cni: 'routed', namespaces, pods, services };
  planCluster(spec, 'demo');
  return spec;
}

function describe(file: string, obj: Document): string {
  return `${obj.kind} ${obj.metadata?.namespace ?? 'default'}/${obj.metadata?.name ?? '?'} (${file})`;
}

function required<T>(file: string, obj: Document, field: string, value: T | undefined): T {
  if (value === undefined || value === null || value === '') throw new InvalidObjectError(describe(file, obj), field, 'required by the demo cluster');
  return value;
}

function podSpec(file: string, pod: PodYaml): PodSpec {
  const meta = pod.metadata ?? {};
  const node = required(file, pod as Document, 'spec.nodeName', pod.spec?.nodeName);
  const ports: ContainerPortSpec[] = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? [])
    .filter((p): p is { name: string; containerPort: number } => Boolean(p.name) && typeof p.containerPort === 'number')
    .map((p) => ({ name: p.name, port: p.containerPort }));
  return {
    name: required(file, pod as Document, 'metadata.name', meta.name),
    namespace: meta.namespace,
    node,
    labels: meta.labels,
    annotations: meta.annotations,
    serviceAccount: pod.spec?.serviceAccountName,
    ports,
    ip: required(file, pod as Document, 'status.podIP', pod.status?.podIP),
  };
}

function serviceSpec(file: string, svc: ServiceYaml): ServiceSpec {
  const meta = svc.metadata ?? {};
  const ports: ServicePortSpec[] = (svc.spec?.ports ?? []).map((p, i) => ({
    name: p.name,
    port: required(file, svc as Document, `spec.ports[${i}].port`, p.port),
    targetPort: p.targetPort,
    appProtocol: p.appProtocol,
  }));
  return {
    name: required(file, svc as Document, 'metadata.name', meta.name),
    namespace: meta.namespace,
    selector: required(file, svc as Document, 'spec.selector', svc.spec?.selector),
    ports,
    clusterIP: required(file, svc as Document, 'spec.clusterIP', svc.spec?.clusterIP),
    annotations: meta.annotations,
  };
}
