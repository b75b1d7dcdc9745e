// The operator commands in a cluster: find the nodemesh-node pod of each node
// (or of `--node NAME`) through the Kubernetes API and reach its admin API,
// which listens on the pod's loopback only, by a port-forward per pod, as
// `kubectl port-forward` does, with @kubernetes/client-node (already the
// control plane's client). Each target is a local listener on 127.0.0.1 whose
// every connection is one port-forward stream to the pod's 15000, so plain HTTP
// and the tap's WebSocket work through it unchanged.

import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { CoreV1Api, KubeConfig, PortForward } from '@kubernetes/client-node';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import type { AdminTarget } from './admin-client.ts';

const NODE_POD_SELECTOR = 'app.kubernetes.io/name=nodemesh-node';
const ADMIN_PORT = 15000;

export interface KubernetesTargetOptions {
  /** Only this node's pod. */
  node?: string;
  kubeconfig?: string;
  /** Namespace of the nodemesh-node pods. */
  namespace: string;
}

export async function kubernetesTargets(opts: KubernetesTargetOptions): Promise<AdminTarget[]> {
  const kc = new KubeConfig();
  try {
    if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
    else if (process.env.KUBERNETES_SERVICE_HOST && !process.env.KUBECONFIG) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    throw new NodemeshError(ErrorCode.KUBE_CONFIG, `cannot load the kubeconfig${opts.kubeconfig ? ` ${opts.kubeconfig}` : ''}: ${(err as Error).message}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) {
    throw new NodemeshError(ErrorCode.KUBE_CONFIG, 'no cluster in the kubeconfig: give --admin HOST:PORT to ask a node directly, or --kubeconfig FILE');
  }
  const api = kc.makeApiClient(CoreV1Api);
  let pods;
  try {
    pods = await api.listNamespacedPod({
      namespace: opts.namespace, labelSelector: NODE_POD_SELECTOR, ...(opts.node ? { fieldSelector: `spec.nodeName=${opts.node}` } : {}),
    });
  } catch (err) {
    throw new NodemeshError(ErrorCode.KUBE_API, `cannot list the nodemesh-node pods in ${opts.namespace} (${kc.getCurrentCluster()!.server}): ${(err as Error).message}`, { cause: err });
  }
  const running = pods.items
    .filter((p) => p.status?.phase === 'Running' && p.metadata?.name && p.spec?.nodeName && (!opts.node || p.spec.nodeName === opts.node))
    .sort((a, b) => a.spec!.nodeName!.localeCompare(b.spec!.nodeName!));
  if (running.length === 0) {
    throw new NodemeshError(ErrorCode.KUBE_API, opts.node
      ? `no running nodemesh-node pod on node ${opts.node} (namespace ${opts.namespace}, ${NODE_POD_SELECTOR}): is the node's name right, and is the DaemonSet scheduled there?`
      : `no running nodemesh-node pod in namespace ${opts.namespace} (${NODE_POD_SELECTOR}): is nodemesh installed (docs/INSTALL.md)?`);
  }
  const forward = new PortForward(kc);
  const targets: AdminTarget[] = [];
  try {
    for (const pod of running) targets.push(await forwardTo(forward, opts.namespace, pod.metadata!.name!, pod.spec!.nodeName!));
  } catch (err) {
    await Promise.all(targets.map((t) => t.close()));
    throw err;
  }
  return targets;
}

/** A local listener forwarding each connection to the pod's admin port. */
async function forwardTo(forward: PortForward, namespace: string, pod: string, node: string): Promise<AdminTarget> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    forward.portForward(namespace, pod, [ADMIN_PORT], socket, null, socket).then(
      (ws) => {
        const opened = typeof ws === 'function' ? ws() : ws;
        socket.once('close', () => opened?.close());
      },
      () => socket.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    label: node,
    address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
