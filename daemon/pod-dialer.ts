// How the data plane reaches a pod on this node. A pod captured inside its own
// network namespace is dialled from inside it, transparently as the client and
// marked as the mesh's (pod-socket.ts), so the application sees the client's
// own address and the pod's capture lets the delivery through. Any other pod is
// dialled from the node, as before.

import type net from 'node:net';
import { connectInNetns } from './pod-socket.ts';
import type { DeliveryOptions } from './pod-socket.ts';
import { connectTcp } from './tcp-connect.ts';

export class PodDialer {
  /** Pod IP -> its network namespace, for pods captured in their namespace. */
  readonly #netns = new Map<string, string>();

  register(podIp: string, netnsPath: string): void {
    this.#netns.set(podIp, netnsPath);
  }

  unregister(podIp: string): void {
    this.#netns.delete(podIp);
  }

  netnsOf(podIp: string): string | undefined {
    return this.#netns.get(podIp);
  }

  /** Connects to a local pod on behalf of `sourceIp`. */
  connect(podIp: string, port: number, sourceIp: string, opts?: DeliveryOptions): Promise<net.Socket> {
    const netns = this.#netns.get(podIp);
    return netns ? connectInNetns(netns, podIp, port, sourceIp, opts) : connectTcp(podIp, port);
  }
}
