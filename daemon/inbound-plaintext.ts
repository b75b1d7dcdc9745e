// The inbound plaintext listener (15006): connections from outside the mesh to
// local enrolled pods, captured by REDIRECT. Refused when the destination's
// namespace is strict; otherwise authorized as an unauthenticated source.
// Connections to a Service VIP with a local enrolled endpoint arrive here too
// (capture runs before kube-proxy's DNAT): they are balanced here, and an
// endpoint that is not local is dialled as is, to be captured on its own node.

import type net from 'node:net';
import type { Service } from '../core/types.ts';
import type { ConfigStore } from './config-store.ts';
import { debug, logger } from '../core/log.ts';
import type { SocketAddress } from './original-dst.ts';
import type { AuthorizationInput } from './authorization.ts';
import type { Admission } from './admission.ts';
import type { ConnectionTracker } from './connection-tracker.ts';
import { CapturedListener } from './captured-listener.ts';
import type { CapturedConnection, DestinationOf } from './captured-listener.ts';
import { relay } from './relay.ts';
import { connectTcp } from './tcp-connect.ts';
import { PodDialer } from './pod-dialer.ts';
import { httpServiceOf } from './l7/protocol.ts';
import { DEFAULT_DETECT_TIMEOUT_MS, detectProtocol } from './l7/detect.ts';
import type { HttpProtocol } from './l7/detect.ts';
import type { HttpInbound } from './l7/http-inbound.ts';
import type { LoadBalancer } from './load-balancer.ts';
import { resolveDestination } from './destination.ts';
import type { FairShare } from './fair-share.ts';
import { sourceKey } from './fair-share.ts';

const log = logger('inbound-plaintext');
const trace = debug('inbound');

export interface InboundPlaintextOptions {
  config: ConfigStore;
  tracker: ConnectionTracker;
  admission: Admission;
  balancer: LoadBalancer;
  host: string;
  port: number;
  /** A listening socket made in a pod's namespace, served instead of binding host:port. */
  fd?: number;
  destinationOf?: DestinationOf;
  /** Reaches pods on this node (from inside their namespace when captured there). */
  dialer?: PodDialer;
  /** Per-request handling of ports a Service declares HTTP; without it every connection is TCP. */
  http?: HttpInbound;
  /** The node's fair share: TCP connections are read under their source (pod, or address from outside the mesh). */
  fairShare?: FairShare;
}

export class InboundPlaintextListener extends CapturedListener {
  readonly #opts: InboundPlaintextOptions;
  readonly #dialer: PodDialer;

  private constructor(opts: InboundPlaintextOptions) {
    super('inbound plaintext', log);
    this.#opts = opts;
    this.#dialer = opts.dialer ?? new PodDialer();
  }

  static async bind(opts: InboundPlaintextOptions): Promise<InboundPlaintextListener> {
    const listener = new InboundPlaintextListener(opts);
    await listener.listen(opts, opts.destinationOf);
    return listener;
  }

  protected onConnection({ client, sourceIp, destination }: CapturedConnection): void {
    let dst: SocketAddress = destination;
    const { config, balancer } = this.#opts;
    if (config.serviceByVip(dst.ip)) {
      const resolved = resolveDestination(config, balancer, dst.ip, dst.port);
      if (resolved.kind === 'unavailable') return this.refuse(client, resolved.reason, { sourceIp, destination: `${dst.ip}:${dst.port}` });
      if (!config.isLocalEnrolled(resolved.ip)) return this.#passThrough(client, sourceIp, resolved.ip, resolved.port);
      dst = { ip: resolved.ip, port: resolved.port };
    }
    const workload = config.isLocalEnrolled(dst.ip);
    if (!workload) return this.refuse(client, 'destination is not an enrolled workload on this node', { sourceIp, destination: dst.ip, node: config.nodeName });
    const input: AuthorizationInput = { sourcePrincipal: null, sourceNamespace: null, sourceIp, destination: workload, port: dst.port };
    // Strict mTLS refuses plaintext per connection; otherwise HTTP ports are authorized per request.
    const httpService = this.#opts.http && workload.mtlsMode !== 'strict' ? httpServiceOf(config, dst.ip, dst.port) : undefined;
    const target = dst;
    trace('plaintext connection', { sourceIp, destination: `${dst.ip}:${dst.port}`, mtlsMode: workload.mtlsMode, http: httpService !== undefined });
    if (httpService) {
      // A port declared HTTP that carries something else is still served, as TCP (fail-closed for L7 rules).
      detectProtocol(client, DEFAULT_DETECT_TIMEOUT_MS).then(({ protocol, head }) => {
        if (client.destroyed) return;
        if (protocol !== 'opaque') this.#serveHttp(client, input, httpService, head, protocol);
        else this.#serveTcp(client, input, target, head);
      });
      return;
    }
    this.#serveTcp(client, input, target, Buffer.alloc(0));
  }

  #serveTcp(client: net.Socket, input: AuthorizationInput, dst: SocketAddress, head: Buffer): void {
    const { config, admission, tracker } = this.#opts;
    const { sourceIp, destination: workload } = input;
    if (!admission.admit(input, { what: 'inbound plaintext connection', log }).allowed) return this.refuseSilently(client);
    const sourceWorkload = config.workloadByIp(sourceIp);
    this.#opts.fairShare?.register(sourceKey(sourceWorkload, sourceIp), client);
    const { ip, port } = dst;
    relay({
      client,
      connect: () => this.#dialer.connect(ip, port, sourceIp, { avoidPort: client.remotePort }),
      head,
      opened: (upstream) => tracker.open({
        listener: 'inbound-plaintext', reporter: 'destination', sourceIp, sourceWorkload, sourcePrincipal: null,
        destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: config.identityOf(workload),
        security: 'none', authorization: input,
        bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
        destroy: () => {
          client.destroy();
          upstream.destroy();
        },
      }).finish,
      failed: (err) => this.refuse(client, 'cannot connect to the destination', { sourceIp, destination: `${ip}:${port}`, error: err.message }),
    });
  }

  #serveHttp(client: net.Socket, input: AuthorizationInput, service: Service, head: Buffer, protocol: HttpProtocol): void {
    const { config, tracker } = this.#opts;
    const workload = input.destination;
    const destinationPrincipal = config.identityOf(workload);
    const sourceWorkload = config.workloadByIp(input.sourceIp);
    // No `authorization`: requests are checked one by one, so a policy change needs no connection re-check.
    const tracked = tracker.open({
      listener: 'inbound-plaintext', reporter: 'destination', sourceIp: input.sourceIp, sourceWorkload, sourcePrincipal: null,
      destinationIp: workload.ip, destinationPort: input.port, destinationWorkload: workload, destinationPrincipal, service, security: 'none',
      bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
      destroy: () => client.destroy(),
    });
    client.on('close', () => tracked.finish());
    const conn = { authorization: input, sourceWorkload, destinationPrincipal, service, security: 'none' as const, addForwardedFor: true };
    if (protocol === 'http2') this.#opts.http!.serveHttp2(client, conn, head);
    else this.#opts.http!.serveHttp1(client, conn, head);
  }

  /** A VIP connection balanced onto an endpoint on another node: its own node captures it. */
  #passThrough(client: net.Socket, sourceIp: string, ip: string, port: number): void {
    relay({
      client,
      connect: () => connectTcp(ip, port),
      opened: () => () => {},
      failed: (err) => this.refuse(client, 'cannot connect to the Service endpoint', { sourceIp, destination: `${ip}:${port}`, error: err.message }),
    });
  }
}


