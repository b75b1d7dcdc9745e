// The outbound listener (15001): connections local enrolled pods opened, captured
// by REDIRECT. The original destination picks the path: a Service VIP is balanced
// over its endpoints; an enrolled workload on another node is reached through an
// HBONE tunnel presenting the source workload's identity; one on this node takes
// the in-process path with the same authorization the destination side applies;
// anything else passes through unchanged. Connections to mesh destinations whose
// port is not declared opaque are first checked for HTTP (l7/detect.ts); HTTP/1
// and HTTP/2 go to the per-request HTTP proxy of their protocol (l7/outbound-http.ts).

import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Service, Workload } from '../core/types.ts';
import type { ConfigStore } from './config-store.ts';
import { debug, logger } from '../core/log.ts';
import type { SocketAddress } from './original-dst.ts';
import type { AuthorizationInput } from './authorization.ts';
import type { Admission } from './admission.ts';
import type { ConnectionInfo, ConnectionTracker } from './connection-tracker.ts';
import type { HbonePool } from './hbone-pool.ts';
import type { LoadBalancer } from './load-balancer.ts';
import { resolveDestination } from './destination.ts';
import { CapturedListener } from './captured-listener.ts';
import type { CapturedConnection, DestinationOf } from './captured-listener.ts';
import { relay } from './relay.ts';
import { connectTcp } from './tcp-connect.ts';
import { PodDialer } from './pod-dialer.ts';
import { DEFAULT_DETECT_TIMEOUT_MS, detectProtocol } from './l7/detect.ts';
import type { HttpProtocol } from './l7/detect.ts';
import { destinationProtocol } from './l7/protocol.ts';
import type { OutboundHttp } from './l7/outbound-http.ts';
import type { SourceLimits } from './source-limits.ts';
import type { FairShare } from './fair-share.ts';
import type { HttpClientConnection } from './l7/request-router.ts';

const log = logger('outbound');
const trace = debug('outbound');

export interface OutboundOptions {
  config: ConfigStore;
  tracker: ConnectionTracker;
  admission: Admission;
  pool: HbonePool;
  balancer: LoadBalancer;
  host: string;
  port: number;
  /** A listening socket made in a pod's namespace, served instead of binding host:port. */
  fd?: number;
  destinationOf?: DestinationOf;
  /** Reaches pods on this node (from inside their namespace when captured there). */
  dialer?: PodDialer;
  /** HTTP handling; without it every connection is carried as TCP. */
  http?: OutboundHttp;
  /** How long an undeclared port waits for the client's first bytes before it is treated as TCP. */
  detectTimeoutMs?: number;
  /** Open connections per source pod (shared by every listener set of the node); without it, unbounded. */
  limits?: SourceLimits;
  /** Reads of each source pod under contention (shared by every listener set of the node). */
  fairShare?: FairShare;
}

type Destination = Pick<ConnectionInfo, 'destinationIp' | 'destinationPort' | 'destinationWorkload' | 'destinationPrincipal' | 'security'>;

/** What every path of one outbound connection shares. */
interface Outbound {
  client: net.Socket;
  source: Workload;
  sourceIdentity: string;
  sourceIp: string;
  service?: Service;
  /** Bytes read while detecting the protocol, sent upstream before the rest. */
  head: Buffer;
}

export class OutboundListener extends CapturedListener {
  readonly #opts: OutboundOptions;
  readonly #dialer: PodDialer;

  private constructor(opts: OutboundOptions) {
    super('outbound', log);
    this.#opts = opts;
    this.#dialer = opts.dialer ?? new PodDialer();
  }

  static async bind(opts: OutboundOptions): Promise<OutboundListener> {
    const listener = new OutboundListener(opts);
    await listener.listen(opts, opts.destinationOf);
    return listener;
  }

  protected onConnection({ client, sourceIp, destination: dst }: CapturedConnection): void {
    const { config } = this.#opts;
    const source = config.isLocalEnrolled(sourceIp);
    if (!source) return this.refuse(client, 'source is not an enrolled workload on this node: check the capture rules and the workload list', { sourceIp, node: config.nodeName });
    const sourceIdentity = config.identityOf(source);
    // Counted and logged (at most once per interval) where it is decided.
    if (this.#opts.limits && !this.#opts.limits.admitConnection(source, sourceIdentity, client)) return this.refuseSilently(client);
    this.#opts.fairShare?.register(`${source.namespace}/${source.name}`, client);
    const { http } = this.#opts;
    const inMesh = config.serviceByVip(dst.ip) !== undefined || config.workloadByIp(dst.ip) !== undefined;
    const declared = http && inMesh ? destinationProtocol(config, dst.ip, dst.port) : 'opaque';
    trace('connection', { sourceIp, destination: `${dst.ip}:${dst.port}`, protocol: declared });
    if (declared === 'opaque') return this.#forward({ client, source, sourceIdentity, sourceIp, head: Buffer.alloc(0) }, dst);
    // A declared HTTP port waits for its client as long as the client likes (pre-connected pools).
    const timeoutMs = declared === 'detect' ? this.#opts.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS : 0;
    detectProtocol(client, timeoutMs).then(({ protocol, head }) => {
      if (client.destroyed) return;
      trace('detected', { sourceIp, destination: `${dst.ip}:${dst.port}`, protocol });
      if (protocol !== 'opaque') return this.#serveHttp(client, { source, sourceIdentity, sourceIp, dstIp: dst.ip, dstPort: dst.port }, head, protocol);
      this.#forward({ client, source, sourceIdentity, sourceIp, head }, dst);
    }).catch((err: Error) => this.refuse(client, 'failed to hand the connection on after protocol detection', { sourceIp, error: err.message }));
  }

  /** Hands an HTTP connection to the handler of its protocol; requests are routed one by one. */
  #serveHttp(client: net.Socket, conn: HttpClientConnection, head: Buffer, protocol: HttpProtocol): void {
    const { config, tracker } = this.#opts;
    const tracked = tracker.open({
      listener: 'outbound', reporter: 'source', sourceIp: conn.sourceIp, sourceWorkload: conn.source, sourcePrincipal: conn.sourceIdentity,
      destinationIp: conn.dstIp, destinationPort: conn.dstPort, destinationWorkload: config.workloadByIp(conn.dstIp),
      destinationPrincipal: null, service: config.serviceByVip(conn.dstIp), security: 'mutual_tls',
      bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
      destroy: () => client.destroy(),
    });
    client.on('close', () => tracked.finish());
    const { http1, http2 } = this.#opts.http!;
    if (protocol === 'http2') http2.handle(client, conn, head);
    else http1.handle(client, conn, head);
  }

  /** Carries the connection as TCP to where its original destination resolves. */
  #forward(out: Outbound, dst: SocketAddress): void {
    const { client, sourceIp } = out;
    const { config, balancer } = this.#opts;
    const destination = resolveDestination(config, balancer, dst.ip, dst.port);
    switch (destination.kind) {
      case 'unavailable':
        return this.refuse(client, destination.reason, { sourceIp, destination: `${dst.ip}:${dst.port}` });
      case 'passthrough':
        return this.#direct({ ...out, service: destination.service }, destination.ip, destination.port, undefined);
      case 'workload': {
        const { workload, ip, port, service } = destination;
        const o = { ...out, service };
        if (!workload.enrolled) return this.#direct(o, ip, port, workload);
        if (workload.node === config.nodeName) return this.#sameNode(o, workload, ip, port);
        return this.#tunnel(o, workload, ip, port);
      }
    }
  }

  /** Plain TCP to a destination outside the mesh. */
  #direct(out: Outbound, ip: string, port: number, workload: Workload | undefined): void {
    this.#relay(out, () => connectTcp(ip, port), 'cannot connect to the destination', {
      destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: null, security: 'none',
    });
  }

  /** HBONE to the destination node. */
  #tunnel(out: Outbound, workload: Workload, ip: string, port: number): void {
    const destinationIdentity = this.#opts.config.identityOf(workload);
    const request = {
      sourceIdentity: out.sourceIdentity, destinationIdentity, destinationIp: ip, destinationNode: workload.node,
      target: `${ip}:${port}`, forwardedFor: out.sourceIp,
    };
    this.#relay(out, () => this.#opts.pool.connect(request), 'HBONE tunnel failed', {
      destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: destinationIdentity, security: 'mutual_tls',
    });
  }

  /** Both ends on this node: admitted as the destination side would, then connected in-process. */
  #sameNode(out: Outbound, workload: Workload, ip: string, port: number): void {
    const { config, admission, tracker } = this.#opts;
    const input: AuthorizationInput = {
      sourcePrincipal: out.sourceIdentity, sourceNamespace: out.source.namespace, sourceIp: out.sourceIp, destination: workload, port,
    };
    if (!admission.admit(input, { what: 'same-node connection', log }).allowed) return this.refuseSilently(out.client);
    const dest = { destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: config.identityOf(workload), security: 'mutual_tls' as const };
    this.#relay(out, () => this.#dialer.connect(ip, port, out.sourceIp), 'cannot connect to the destination', dest, (upstream) => {
      // Istio reports a same-node connection from both sides; only the destination side is re-authorized.
      const destinationSide = tracker.open({ ...this.#info(out, upstream, dest), listener: 'same-node', reporter: 'destination', authorization: input });
      return destinationSide.finish;
    });
  }

  /** Connects, tracks the source side (and, for same-node, the destination side) and splices; the balancer counts it until the close. */
  #relay(
    out: Outbound,
    connect: () => Promise<Duplex>,
    failure: string,
    dest: Destination,
    alsoTrack?: (upstream: Duplex) => (error?: Error) => void,
  ): void {
    relay({
      client: out.client,
      connect,
      head: out.head,
      settled: this.#opts.balancer.track(dest.destinationIp),
      opened: (upstream) => {
        const tracked = this.#opts.tracker.open({ ...this.#info(out, upstream, dest), listener: 'outbound', reporter: 'source' });
        const alsoFinish = alsoTrack?.(upstream);
        return (err) => {
          tracked.finish(err);
          alsoFinish?.(err);
        };
      },
      failed: (err) => this.refuse(out.client, failure, { sourceIp: out.sourceIp, destination: `${dest.destinationIp}:${dest.destinationPort}`, error: err.message }),
    });
  }

  #info(out: Outbound, upstream: Duplex, dest: Destination): Omit<ConnectionInfo, 'listener' | 'reporter'> {
    const { client } = out;
    return {
      ...dest,
      sourceIp: out.sourceIp,
      sourceWorkload: out.source,
      sourcePrincipal: out.sourceIdentity,
      service: out.service,
      // The client socket is the source: what it read was sent by the source.
      bytes: () => ({ received: client.bytesRead, sent: client.bytesWritten }),
      destroy: () => {
        client.destroy();
        upstream.destroy();
      },
    };
  }
}
