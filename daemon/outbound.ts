// The outbound listener (15001): connections local enrolled pods opened, captured
// by REDIRECT. The original destination picks the path: a Service VIP is balanced
// over its endpoints; an enrolled workload on another node is reached through an
// HBONE tunnel presenting the source workload's identity; one on this node takes
// the in-process path with the same authorization the destination side applies;
// anything else passes through unchanged. Connections to mesh destinations whose
// port is not declared opaque are first checked for HTTP (l7/detect.ts); HTTP/1
// and HTTP/2 go to the per-request HTTP proxy (l7/http-outbound.ts).

import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Service, Workload } from '../core/types.ts';
import type { ConfigStore } from './config-store.ts';
import { logger } from '../core/log.ts';
import type { SocketAddress } from './original-dst.ts';
import type { AuthorizationInput } from './authorization.ts';
import { checkAccess } from './access-check.ts';
import type { ConnectionInfo, ConnectionTracker } from './connection-tracker.ts';
import type { DaemonMetrics } from './metrics.ts';
import type { HbonePool } from './hbone-pool.ts';
import type { LoadBalancer } from './load-balancer.ts';
import { resolveDestination } from './destination.ts';
import { CapturedListener } from './captured-listener.ts';
import type { CapturedConnection, DestinationOf } from './captured-listener.ts';
import { splice } from './splice.ts';
import { connectTcp } from './tcp-connect.ts';
import { DEFAULT_DETECT_TIMEOUT_MS, detectProtocol } from './l7/detect.ts';
import { destinationProtocol } from './l7/protocol.ts';
import type { HttpOutbound } from './l7/http-outbound.ts';

const log = logger('outbound');

export interface OutboundOptions {
  config: ConfigStore;
  tracker: ConnectionTracker;
  metrics: DaemonMetrics;
  pool: HbonePool;
  balancer: LoadBalancer;
  host: string;
  port: number;
  destinationOf?: DestinationOf;
  /** HTTP handling; without it every connection is carried as TCP. */
  http?: HttpOutbound;
  /** How long an undeclared port waits for the client's first bytes before it is treated as TCP. */
  detectTimeoutMs?: number;
}

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

  private constructor(opts: OutboundOptions) {
    super('outbound', log);
    this.#opts = opts;
  }

  static async bind(opts: OutboundOptions): Promise<OutboundListener> {
    const listener = new OutboundListener(opts);
    await listener.listen(opts.host, opts.port, opts.destinationOf);
    return listener;
  }

  protected onConnection({ client, sourceIp, destination: dst }: CapturedConnection): void {
    const { config } = this.#opts;
    const source = config.isLocalEnrolled(sourceIp);
    if (!source) return this.refuse(client, 'source is not an enrolled workload on this node: check the capture rules and the workload list', { sourceIp, node: config.nodeName });
    const sourceIdentity = config.identityOf(source);
    const { http } = this.#opts;
    const inMesh = config.serviceByVip(dst.ip) !== undefined || config.workloadByIp(dst.ip) !== undefined;
    const declared = http && inMesh ? destinationProtocol(config, dst.ip, dst.port) : 'opaque';
    if (declared === 'opaque') return this.#forward({ client, source, sourceIdentity, sourceIp, head: Buffer.alloc(0) }, dst);
    // A declared HTTP port waits for its client as long as the client likes (pre-connected pools).
    const timeoutMs = declared === 'detect' ? this.#opts.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS : 0;
    detectProtocol(client, timeoutMs).then(({ protocol, head }) => {
      if (client.destroyed) return;
      if (protocol !== 'opaque') return http!.handle(client, { source, sourceIdentity, sourceIp, dstIp: dst.ip, dstPort: dst.port }, head, protocol);
      this.#forward({ client, source, sourceIdentity, sourceIp, head }, dst);
    }).catch((err: Error) => this.refuse(client, 'failed to hand the connection on after protocol detection', { sourceIp, error: err.message }));
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
    const release = this.#opts.balancer.track(ip);
    connectTcp(ip, port).then(
      (upstream) => this.#proxy(out, upstream, release, { destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: null, security: 'none' }),
      (err: Error) => {
        release();
        this.refuse(out.client, 'cannot connect to the destination', { sourceIp: out.sourceIp, destination: `${ip}:${port}`, error: err.message });
      },
    );
  }

  /** HBONE to the destination node. */
  #tunnel(out: Outbound, workload: Workload, ip: string, port: number): void {
    const destinationIdentity = this.#opts.config.identityOf(workload);
    const release = this.#opts.balancer.track(ip);
    this.#opts.pool
      .connect({
        sourceIdentity: out.sourceIdentity, destinationIdentity, destinationIp: ip, destinationNode: workload.node,
        target: `${ip}:${port}`, forwardedFor: out.sourceIp,
      })
      .then(
        (stream) => this.#proxy(out, stream, release, { destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: destinationIdentity, security: 'mutual_tls' }),
        (err: Error) => {
          release();
          this.refuse(out.client, 'HBONE tunnel failed', { sourceIp: out.sourceIp, destination: `${ip}:${port}`, error: err.message });
        },
      );
  }

  /** Both ends on this node: authorize as the destination side would, then connect in-process. */
  #sameNode(out: Outbound, workload: Workload, ip: string, port: number): void {
    const { config, metrics, tracker } = this.#opts;
    const destinationIdentity = config.identityOf(workload);
    const input: AuthorizationInput = {
      sourcePrincipal: out.sourceIdentity, sourceNamespace: out.source.namespace, sourceIp: out.sourceIp, destination: workload, port,
    };
    const decision = checkAccess(config, input);
    if (!decision.allowed) {
      metrics.tcpDenied.inc({
        reporter: 'destination', destination_workload: workload.workloadName, destination_workload_namespace: workload.namespace,
        source_principal: out.sourceIdentity, reason: 'policy',
      });
      return this.refuse(out.client, 'denied by authorization policy', { sourceIp: out.sourceIp, destination: `${ip}:${port}`, reason: decision.reason, policy: decision.policy });
    }
    const release = this.#opts.balancer.track(ip);
    connectTcp(ip, port).then(
      (upstream) => {
        const common = { destinationIp: ip, destinationPort: port, destinationWorkload: workload, destinationPrincipal: destinationIdentity, security: 'mutual_tls' as const };
        // Istio reports a same-node connection from both sides; only the destination side is re-authorized.
        const destinationSide = tracker.open({
          ...this.#info(out, upstream, common),
          listener: 'same-node',
          reporter: 'destination',
          authorization: input,
        });
        this.#proxy(out, upstream, release, common, destinationSide.finish);
      },
      (err: Error) => {
        release();
        this.refuse(out.client, 'cannot connect to the destination', { sourceIp: out.sourceIp, destination: `${ip}:${port}`, error: err.message });
      },
    );
  }

  #proxy(
    out: Outbound,
    upstream: Duplex,
    release: () => void,
    dest: Pick<ConnectionInfo, 'destinationIp' | 'destinationPort' | 'destinationWorkload' | 'destinationPrincipal' | 'security'>,
    alsoFinish?: (error?: Error) => void,
  ): void {
    if (out.client.destroyed) {
      release();
      upstream.destroy();
      alsoFinish?.();
      return;
    }
    const tracked = this.#opts.tracker.open({ ...this.#info(out, upstream, dest), listener: 'outbound', reporter: 'source' });
    if (out.head.length) upstream.write(out.head);
    splice(out.client, upstream, (err) => {
      release();
      tracked.finish(err);
      alsoFinish?.(err);
    });
  }

  #info(
    out: Outbound,
    upstream: Duplex,
    dest: Pick<ConnectionInfo, 'destinationIp' | 'destinationPort' | 'destinationWorkload' | 'destinationPrincipal' | 'security'>,
  ): Omit<ConnectionInfo, 'listener' | 'reporter'> {
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

/** Refuses with a reset, so the application sees the failure instead of an empty reply. */
