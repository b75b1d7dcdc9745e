// The cluster as the Kubernetes YAML the control plane reads in file mode: one
// file per object, so a test can edit or delete a single object live.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject } from '../../controlplane/source.ts';
import type { ClusterPlan, NamespaceSpec, PlannedPod, PlannedService } from './plan.ts';

export function namespaceObject(ns: NamespaceSpec): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns.name, labels: { ...ns.labels }, annotations: { ...ns.annotations } } };
}

export function podObject(pod: PlannedPod): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, labels: pod.labels, annotations: pod.annotations },
    spec: {
      nodeName: pod.node,
      serviceAccountName: pod.serviceAccount,
      containers: [{ name: 'app', image: 'nodemesh-test-server', ports: pod.ports.map((p) => ({ name: p.name, containerPort: p.port })) }],
    },
    status: { phase: 'Running', podIP: pod.ip, podIPs: [{ ip: pod.ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

export function serviceObject(svc: PlannedService): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: svc.name, namespace: svc.namespace, annotations: svc.annotations },
    spec: {
      type: 'ClusterIP',
      clusterIP: svc.clusterIP,
      clusterIPs: [svc.clusterIP],
      selector: svc.selector,
      ports: svc.ports.map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        protocol: 'TCP',
        port: p.port,
        targetPort: p.targetPort,
        ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
      })),
    },
  };
}

/** File name of an object in the config dir: kind-namespace-name.yaml. */
export function objectFileName(obj: KubeObject): string {
  return `${obj.kind.toLowerCase()}-${obj.metadata.namespace ? `${obj.metadata.namespace}-` : ''}${obj.metadata.name}.yaml`;
}

/** Writes one object (any kind: HTTPRoute, AuthorizationPolicy, ...) and returns its path. */
export async function writeObject(dir: string, obj: KubeObject): Promise<string> {
  const path = join(dir, objectFileName(obj));
  // Write to a temporary name first so a watching control plane never reads half a file.
  const tmp = join(dir, `.${objectFileName(obj)}.tmp`);
  await writeFile(tmp, stringify(obj));
  await rename(tmp, path);
  return path;
}

/** Writes the Namespaces, Pods and Services of the cluster into `dir`; returns the paths written. */
export async function generateConfigDir(plan: ClusterPlan, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const objects = [...plan.namespaces.map(namespaceObject), ...plan.pods.map(podObject), ...plan.services.map(serviceObject)];
  const paths: string[] = [];
  for (const obj of objects) paths.push(await writeObject(dir, obj));
  return paths;
}
