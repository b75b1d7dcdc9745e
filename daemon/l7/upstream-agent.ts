// A keep-alive http.Agent for one upstream endpoint whose connections come from
// the mesh: an HBONE stream (HbonePool.connect) to a remote pod, or a plain
// socket to a pod on this node after the in-process authorization. The agent
// pools them as it pools sockets, so requests to an endpoint reuse tunnels —
// except tunnels of a session the destination node is draining (GOAWAY, on its
// restart): they take no further request, which goes to a new tunnel of the
// next daemon instead of racing the old one's drain deadline; and connections
// the upstream ended (a pod closing an idle keep-alive connection).

import http from 'node:http';
import type { Duplex } from 'node:stream';
import { PeerError } from '../../core/errors.ts';
import { tunnelDraining } from '../hbone-pool.ts';
import { socketLike } from './socket-like.ts';

/** Idle pooled connections are closed after this long. */
const FREE_CONNECTION_TIMEOUT_MS = 30_000;
const MAX_CONNECTIONS_PER_ENDPOINT = 256;

/** Opening the connection failed: the request never left, so it is safe to retry. */
export class UpstreamConnectError extends PeerError {}

export type Connect = () => Promise<Duplex>;

/** http.Agent's request entry point: not in node's type declarations. */
interface AgentInternals {
  addRequest(req: http.ClientRequest, options: object): void;
}

/**
 * What the base agent reads of a request's options when it pools: a name for
 * the pool (one endpoint per agent, so always the same) and a TLS server name
 * ('' means none: these connections carry no TLS of their own). The base copies
 * the options it is given into a fresh object per request; each request's own
 * (headers and all) made that copy the largest allocation of a proxied request
 * on the node: 5 KiB a request of about 75.
 */
const POOL_OPTIONS = Object.freeze({ host: 'endpoint', port: 0, servername: '' });

export class UpstreamAgent extends http.Agent {
  readonly #connect: Connect;
  /** The one pool's name in freeSockets. */
  readonly #pool: string;

  constructor(connect: Connect) {
    super({ keepAlive: true, maxSockets: MAX_CONNECTIONS_PER_ENDPOINT, maxFreeSockets: MAX_CONNECTIONS_PER_ENDPOINT, scheduling: 'lifo' });
    this.#connect = connect;
    this.#pool = this.getName(POOL_OPTIONS);
  }

  override createConnection(_options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    this.#connect().then(
      (stream) => callback?.(null, endWhenEnded(socketLike(stream))),
      (err: Error) => callback?.(err instanceof UpstreamConnectError ? err : new UpstreamConnectError(err.message, { cause: err }), undefined as unknown as Duplex),
    );
    // Asynchronous: the agent takes the connection from the callback.
    return undefined;
  }

  addRequest(req: http.ClientRequest): void {
    // LIFO: the base takes the last idle tunnel. Retiring a socket (destroyed, then
    // `agentRemove`) takes it out of the list at once.
    const idle = this.freeSockets[this.#pool];
    while (idle?.length && !reusable(idle[idle.length - 1]!)) {
      const tunnel = idle[idle.length - 1]!;
      tunnel.destroy();
      tunnel.emit('agentRemove');
    }
    (http.Agent.prototype as unknown as AgentInternals).addRequest.call(this, req, POOL_OPTIONS);
  }

  // The base methods also arm and clear node's guard against data arriving on idle sockets.
  override keepSocketAlive(socket: Duplex): boolean {
    if (!reusable(socket)) return false;
    const kept = (super.keepSocketAlive(socket) as unknown as boolean | undefined) !== false;
    (socket as Duplex & { setTimeout(ms: number): void }).setTimeout(FREE_CONNECTION_TIMEOUT_MS);
    return kept;
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    super.reuseSocket(socket, request);
    (socket as Duplex & { setTimeout(ms: number): void }).setTimeout(0);
  }
}

/**
 * A connection a request may go out on: ours to write (an upstream that ended
 * its side has ours ended too, endWhenEnded), and not a tunnel of a draining session.
 */
function reusable(connection: Duplex): boolean {
  return !connection.writableEnded && !tunnelDraining(connection);
}

/**
 * Ends our side of a connection once the upstream ended its own, as node does
 * for its sockets (allowHalfOpen false), so the pool lets it go. An HBONE
 * tunnel is half-open by nature: when the pod closed an idle keep-alive
 * connection, its tunnel stayed pooled, and a request sent on it went to a pod
 * connection that no longer existed and was never answered.
 */
function endWhenEnded<T extends Duplex>(connection: T): T {
  connection.on('end', () => {
    if (!connection.writableEnded) connection.end();
  });
  return connection;
}
