// The node's client of the control API (nodemesh.v1.Mesh over TLS, bearer token).
// Watch keeps one stream open, resuming from the store's (epoch, version); every
// update is applied to the ConfigStore and persisted as last-known-good, so the
// node keeps serving, and restarts, while the control plane is away. A broken
// stream is re-opened with jittered exponential backoff (100 ms to 10 s), and at
// once when the channel reconnects: the channel redials at most every second
// (grpc-js's own backoff reaches 120 s, and after a 2-minute outage nodes came
// back 45-67 s late), so a node resyncs within ~1 s of the control plane's return
// while a control plane that is up but refusing still sees each node only as
// often as the jittered backoff allows.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { debug, logger } from '../core/log.ts';
import { meshService, updateFromWire, CONTROL_PLANE_TLS_NAME, SnapshotAssembler } from '../core/wire.ts';
import type { WireUpdate } from '../core/wire.ts';
import type { ConfigStore } from '../daemon/config-store.ts';
import type { SignResult, Signer } from './cert-manager.ts';
import { LastKnownGood } from './last-known-good.ts';
import { Backoff } from './backoff.ts';

const log = logger('control');
// NODEMESH_DEBUG=config: every update as it is applied (the scale benchmark times changes by it).
const traceConfig = debug('config');
const SIGN_DEADLINE_MS = 15_000;
/** The channel's redial backoff: grpc-js jitters it by 20%. */
const RECONNECT_BACKOFF_MS = { initial: 500, max: 1_000 };
/** How long one wait for a channel state change lasts before it is renewed. */
const CHANNEL_WATCH_MS = 60_000;

export interface ControlClientOptions {
  nodeName: string;
  /** "host:port" of the control API. */
  address: string;
  /** Re-read for every call: projected ServiceAccount tokens rotate. */
  tokenFile: string;
  /** PEM roots that sign the control plane's serving certificate. */
  caPem: string;
  /** The last-known-good config is written to <stateDir>/config.jsonl. */
  stateDir: string;
  store: ConfigStore;
}

export interface ConnectionState {
  address: string;
  connected: boolean;
  lastError: string | null;
  /** ISO times; null until it first happens. */
  lastConnected: string | null;
  lastUpdate: string | null;
  reconnects: number;
}

export interface RejectedResource {
  object: string;
  field: string;
  message: string;
}

/** A control-API call failed; `grpcCode` is the gRPC status the control plane (or the channel) returned. */
export class ControlPlaneCallError extends NodemeshError {
  readonly grpcCode: grpc.status;
  constructor(message: string, grpcCode: grpc.status, cause: unknown) {
    super(ErrorCode.CONTROL_PLANE_CALL, message, { cause });
    this.grpcCode = grpcCode;
  }
}

interface MeshClient extends grpc.Client {
  Watch(request: { node: string; epoch: string; version: number }): grpc.ClientReadableStream<WireUpdate>;
  Sign(
    request: { csrs: string[] },
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, response?: { certificates: { identity: string; certChain: string }[]; trustBundle: string }) => void,
  ): grpc.ClientUnaryCall;
}

export function configPath(stateDir: string): string {
  return join(stateDir, 'config.jsonl');
}

export class ControlClient implements Signer {
  readonly #opts: ControlClientOptions;
  readonly #client: MeshClient;
  readonly #backoff = new Backoff({ initialMs: 100, maxMs: 10_000 });
  readonly #rejected = new Map<string, RejectedResource>();
  #call: grpc.ClientReadableStream<WireUpdate> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  /** Bumped per wait for the channel, so only the latest one acts. */
  #channelWait = 0;
  #closed = false;
  #state: ConnectionState;
  readonly #lastKnownGood: LastKnownGood;
  readonly #snapshotParts = new SnapshotAssembler();

  constructor(opts: ControlClientOptions) {
    this.#opts = opts;
    this.#lastKnownGood = new LastKnownGood(opts.store, configPath(opts.stateDir));
    this.#state = { address: opts.address, connected: false, lastError: null, lastConnected: null, lastUpdate: null, reconnects: 0 };
    const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
      let token: string;
      try {
        token = readFileSync(opts.tokenFile, 'utf8').trim();
      } catch (err) {
        callback(new NodemeshError(ErrorCode.TOKEN_FILE, `cannot read the node token ${opts.tokenFile}: ${(err as Error).message}`));
        return;
      }
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${token}`);
      callback(null, md);
    });
    const credentials = grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(Buffer.from(opts.caPem)), bearer);
    const Mesh = meshService();
    this.#client = new Mesh(opts.address, credentials, {
      ...(dialsIp(opts.address) ? { 'grpc.ssl_target_name_override': CONTROL_PLANE_TLS_NAME } : {}),
      // Snapshots come in parts, but one delta can be large (a namespace of thousands of pods enrolled at once).
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // Pings notice a control plane that vanished without closing the connection
      // (host crash, partition) in ~40 s; otherwise the Watch stream would hang forever.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': RECONNECT_BACKOFF_MS.initial,
      'grpc.max_reconnect_backoff_ms': RECONNECT_BACKOFF_MS.max,
    }) as unknown as MeshClient;
  }

  /** Opens the Watch stream; it stays open (reconnecting) until close(). */
  start(): void {
    this.#watch();
  }

  status(): ConnectionState {
    return { ...this.#state };
  }

  /** Resources the control plane sent that this node could not use, by object name. */
  rejected(): RejectedResource[] {
    return [...this.#rejected.values()];
  }

  sign(csrs: string[]): Promise<SignResult> {
    return new Promise((resolve, reject) => {
      this.#client.Sign({ csrs }, { deadline: Date.now() + SIGN_DEADLINE_MS }, (err, response) => {
        if (err || !response) {
          const code = err?.code ?? grpc.status.UNKNOWN;
          reject(new ControlPlaneCallError(`Sign at ${this.#opts.address}: ${grpc.status[code]}: ${err?.details ?? 'empty response'}${hintFor(code, this.#opts)}`, code, err));
          return;
        }
        resolve({
          certificates: response.certificates.map((c) => ({ identity: c.identity, certChain: c.certChain })),
          trustBundle: response.trustBundle,
        });
      });
    });
  }

  /** Stops watching; resolves once the last-known-good config is on disk. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#call?.cancel();
    this.#client.close();
    this.#state.connected = false;
    await this.#lastKnownGood.flush();
  }

  #watch(): void {
    if (this.#closed) return;
    const { store, nodeName } = this.#opts;
    const call = this.#client.Watch({ node: nodeName, epoch: store.epoch, version: store.version });
    this.#call = call;
    // Parts of a snapshot from a stream that broke are never completed.
    this.#snapshotParts.reset();
    call.on('data', (message: WireUpdate) => this.#onUpdate(message));
    // Every outcome ends in 'status'; 'error' needs a listener only so it is not thrown.
    call.on('error', () => {});
    call.on('status', (status: grpc.StatusObject) => {
      if (this.#call !== call || this.#closed) return;
      this.#call = undefined;
      this.#state.connected = false;
      const reason = status.code === grpc.status.OK ? 'the control plane ended the stream' : `${grpc.status[status.code]}: ${status.details}`;
      this.#state.lastError = reason;
      const delay = this.#backoff.next();
      log.warn(`watch stream to the control plane closed; reconnecting${hintFor(status.code, this.#opts)}`, {
        address: this.#opts.address, error: reason, retryInMs: delay,
      });
      this.#state.reconnects++;
      this.#retryTimer = setTimeout(() => this.#watch(), delay);
      this.#watchWhenChannelReturns();
    });
  }

  /**
   * Re-opens the stream as soon as the channel goes from not ready to READY
   * (the control plane is back), instead of at the end of the backoff. A channel
   * still READY when the stream closed (the server ended it, or refused the call)
   * does not count: that retry waits for the backoff.
   */
  #watchWhenChannelReturns(): void {
    const wait = ++this.#channelWait;
    const channel = this.#client.getChannel();
    let wasDown = false;
    const step = () => {
      if (this.#closed || this.#call || wait !== this.#channelWait) return;
      // `true`: an idle channel starts dialling.
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.SHUTDOWN) return;
      if (state === grpc.connectivityState.READY && wasDown) {
        clearTimeout(this.#retryTimer);
        this.#watch();
        return;
      }
      if (state !== grpc.connectivityState.READY) wasDown = true;
      channel.watchConnectivityState(state, Date.now() + CHANNEL_WATCH_MS, step);
    };
    step();
  }

  #onUpdate(part: WireUpdate): void {
    const message = this.#snapshotParts.accept(part);
    if (!message) return;
    const now = new Date().toISOString();
    if (!this.#state.connected) {
      this.#state.connected = true;
      this.#state.lastConnected = now;
      this.#state.lastError = null;
      this.#backoff.reset();
      log.info('watching the control plane', { address: this.#opts.address, resumed: !message.snapshot });
    }
    const { update, rejected } = updateFromWire(message);
    if (update.snapshot) this.#rejected.clear();
    for (const r of update.upserts) this.#rejected.delete(`${r.kind} ${JSON.stringify(r.key)}`);
    for (const k of update.removals) this.#rejected.delete(`${k.kind} ${JSON.stringify(k.key)}`);
    for (const err of rejected) {
      this.#rejected.set(err.object, { object: err.object, field: err.field, message: err.message });
      log.warn('rejected a resource from the control plane; the rest of the update is applied', { object: err.object, field: err.field, error: err.message });
    }
    this.#opts.store.apply(update);
    traceConfig('applied an update', { version: update.version, snapshot: update.snapshot, upserts: update.upserts.length, removals: update.removals.length });
    this.#state.lastUpdate = now;
    this.#lastKnownGood.schedule();
  }
}

/** What the operator should check for a failed call, by gRPC status. */
function hintFor(code: grpc.status, opts: ControlClientOptions): string {
  switch (code) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return `: check that ${opts.tokenFile} holds the token the control plane knows for node ${JSON.stringify(opts.nodeName)}`;
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return `: check that the control plane runs at ${opts.address} and that --ca-file holds the CA that signed its serving certificate`;
    default:
      return '';
  }
}

/** Whether `host:port` names its host by IP address. */
function dialsIp(address: string): boolean {
  const host = /^\[?([^\]]*?)\]?:\d+$/.exec(address)?.[1] ?? address;
  return isIP(host) !== 0;
}
