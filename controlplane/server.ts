// The control API (nodemesh.v1.Mesh) over TLS: Watch streams the mesh model to
// a node (snapshot or resumed deltas, then every delta), Sign issues workload
// certificates only for identities of enrolled pods on the calling node.

import { hostname } from 'node:os';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { BindError, ErrorCode, InvalidObjectError, NodemeshError, NotAuthorizedError } from '../core/errors.ts';
import { identityOf } from '../core/identity.ts';
import { logger } from '../core/log.ts';
import { meshService, updateToMessages, CONTROL_PLANE_TLS_NAME } from '../core/wire.ts';
import type { ConfigUpdate } from '../core/types.ts';
import type { ConfigSource } from './source.ts';
import type { NodeAuthenticator } from './node-auth.ts';
import type { CertificateAuthority } from './ca.ts';
import { MeshModel } from './mesh-model.ts';
import type { RouteStatus } from './route-status.ts';
import { serveStatus } from './status-server.ts';

const log = logger('control-api');
// A node that falls this many updates behind is cut off; it reconnects and
// resumes (or takes a snapshot) instead of growing our memory.
const MAX_BUFFERED_UPDATES = 10_000;
const MAX_CSRS_PER_CALL = 64;
const SHUTDOWN_GRACE_MS = 2000;

export interface ControlPlaneOptions {
  source: ConfigSource;
  /** "host:port"; port 0 picks a free one. */
  listen: string;
  ca: CertificateAuthority;
  authenticator: NodeAuthenticator;
  trustDomain?: string;
  /** Names and IPs nodes dial; default: the listen host, or localhost and this host's name. */
  servingHosts?: string[];
  /** Where each changed route status goes besides the log (the status subresource in Kubernetes). */
  routeStatus?: (status: RouteStatus) => void;
  /** "host:port" of the status endpoint (GET /routes, /rejected); unset: none. */
  statusListen?: string;
}

export interface RunningControlPlane {
  /** host:port actually bound. */
  address: string;
  /** PEM the nodes pass as --ca-file. */
  caPem: string;
  model: MeshModel;
  /** host:port of the status endpoint, when one was asked for. */
  statusAddress?: string;
  stop(): Promise<void>;
}

interface WatchRequest {
  node: string;
  epoch: string;
  version: number;
}

interface SignRequest {
  csrs: string[];
}

interface SignResponse {
  certificates: { identity: string; certChain: string }[];
  trustBundle: string;
}

type Failure = { code: grpc.status; details: string };

export async function startControlPlane(opts: ControlPlaneOptions): Promise<RunningControlPlane> {
  const trustDomain = opts.trustDomain ?? opts.ca.trustDomain;
  if (trustDomain !== opts.ca.trustDomain) {
    throw new NodemeshError(ErrorCode.TRUST_DOMAIN, `trust domain ${JSON.stringify(trustDomain)} differs from the CA's ${JSON.stringify(opts.ca.trustDomain)}: create the CA with the same trust domain`);
  }
  const model = new MeshModel({ trustDomain });
  model.onRouteStatus((status) => {
    // Once per change: the model calls only when the conditions differ.
    log.info('route status', { route: `${status.kind} ${status.namespace}/${status.name}`, generation: status.generation, parents: status.parents.map((p) => ({ parent: `${p.parentRef.namespace}/${p.parentRef.name}${p.parentRef.port ? `:${p.parentRef.port}` : ''}`, conditions: p.conditions.map((c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`) })) });
    opts.routeStatus?.(status);
  });
  const statusServer = opts.statusListen ? await serveStatus(opts.statusListen, model) : undefined;
  const { host } = splitHostPort(opts.listen);
  const serving = await opts.ca.issueServingCert([...new Set([...(opts.servingHosts ?? defaultServingHosts(host)), CONTROL_PLANE_TLS_NAME])]);
  const watches = new Set<grpc.ServerWritableStream<WatchRequest, unknown>>();
  const server = new grpc.Server();
  server.addService(meshService().service, {
    Watch: (call: grpc.ServerWritableStream<WatchRequest, unknown>) => {
      watches.add(call);
      call.on('close', () => watches.delete(call));
      void serveWatch(call, model, opts.authenticator);
    },
    Sign: (call: grpc.ServerUnaryCall<SignRequest, SignResponse>, callback: grpc.sendUnaryData<SignResponse>) => {
      serveSign(call, model, opts.ca, opts.authenticator).then(
        (response) => callback(null, response),
        (err: unknown) => callback(toFailure(err)),
      );
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(serving.keyPem), cert_chain: Buffer.from(serving.chainPem) }], false);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.listen, credentials, (err, boundPort) => (err ? reject(new BindError('control API', opts.listen, err)) : resolve(boundPort)));
  });
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;

  const stop = async () => {
    statusServer?.server.close();
    for (const call of watches) call.end();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await opts.source.stop();
  };
  try {
    await opts.source.start(model);
  } catch (err) {
    await stop();
    throw err;
  }
  log.info('control API listening', { address, trustDomain });
  return { address, caPem: opts.ca.rootPem, model, statusAddress: statusServer?.address, stop };
}

async function authenticate(call: { metadata: grpc.Metadata }, authenticator: NodeAuthenticator): Promise<string> {
  const header = call.metadata.get('authorization')[0];
  const match = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!match) {
    throw failure(grpc.status.UNAUTHENTICATED, 'missing "authorization: Bearer <token>" metadata: check that the node is started with --token-file');
  }
  try {
    return await authenticator.authenticate(match[1]!);
  } catch (err) {
    if (err instanceof NotAuthorizedError) throw failure(grpc.status.UNAUTHENTICATED, err.message);
    throw failure(grpc.status.UNAVAILABLE, `cannot check the node token now: ${(err as Error).message}`);
  }
}

async function serveWatch(call: grpc.ServerWritableStream<WatchRequest, unknown>, model: MeshModel, authenticator: NodeAuthenticator): Promise<void> {
  let unsubscribe: (() => void) | undefined;
  let closed = false;
  call.on('close', () => {
    closed = true;
    unsubscribe?.();
  });
  try {
    const node = await authenticate(call, authenticator);
    const { node: asked, epoch, version } = call.request;
    if (asked !== node) {
      throw failure(grpc.status.PERMISSION_DENIED, `the token belongs to node ${JSON.stringify(node)} but Watch asks for node ${JSON.stringify(asked)}: check --node-name and --token-file of that node`);
    }
    await model.whenSynced();
    if (closed) return;
    const send = (update: ConfigUpdate) => {
      if (closed) return;
      for (const message of updateToMessages(update)) call.write(message);
      // The stream is in object mode: writableLength counts updates.
      if (call.writableLength > MAX_BUFFERED_UPDATES) {
        log.warn('node reads config too slowly; closing its stream so it resumes', { node, bufferedUpdates: call.writableLength });
        closed = true;
        unsubscribe?.();
        call.emit('error', failure(grpc.status.RESOURCE_EXHAUSTED, 'config stream fell too far behind; reconnect to resume'));
      }
    };
    // Subscribing and reading the current state in the same tick: no delta is missed or repeated.
    unsubscribe = model.subscribe(send);
    const missed = model.deltasSince(epoch, Number(version));
    if (missed) {
      // An empty resume still tells the node it is connected and current.
      if (missed.length === 0) send({ epoch: model.epoch, version: model.version, snapshot: false, upserts: [], removals: [] });
      for (const delta of missed) send(delta);
    } else {
      send(model.snapshotFor());
    }
    log.info('node watching', { node, resumed: missed !== null, fromVersion: Number(version), version: model.version });
  } catch (err) {
    unsubscribe?.();
    if (!closed) call.emit('error', toFailure(err));
  }
}

async function serveSign(call: grpc.ServerUnaryCall<SignRequest, SignResponse>, model: MeshModel, ca: CertificateAuthority, authenticator: NodeAuthenticator): Promise<SignResponse> {
  const node = await authenticate(call, authenticator);
  const csrs = call.request.csrs ?? [];
  if (csrs.length === 0) throw failure(grpc.status.INVALID_ARGUMENT, 'csrs: empty; send at least one CSR');
  if (csrs.length > MAX_CSRS_PER_CALL) throw failure(grpc.status.INVALID_ARGUMENT, `csrs: at most ${MAX_CSRS_PER_CALL} per call, got ${csrs.length}`);
  const identities = await Promise.all(csrs.map(async (pem, i) => (await ca.checkCsr(pem, i)).identity));
  await model.whenSynced();
  const allowed = new Set(model.workloadsOnNode(node).filter((w) => w.enrolled).map((w) => identityOf(ca.trustDomain, w.namespace, w.serviceAccount)));
  for (const identity of identities) {
    if (!allowed.has(identity)) {
      throw failure(grpc.status.PERMISSION_DENIED, `node ${node} runs no pod with identity ${identity}: only identities of enrolled pods scheduled on the calling node are signed`);
    }
  }
  const certificates = await Promise.all(csrs.map(async (pem, i) => {
    const signed = await ca.signCsr(pem, undefined, i);
    return { identity: signed.identity, certChain: signed.chainPem };
  }));
  log.info('signed workload certificates', { node, identities });
  return { certificates, trustBundle: ca.rootPem };
}

function failure(code: grpc.status, details: string): Failure {
  return { code, details };
}

function toFailure(err: unknown): Partial<grpc.StatusObject> {
  if (isFailure(err)) return err;
  if (err instanceof InvalidObjectError) {
    // "CSR #2" is csrs[2] of the request.
    const csr = /^CSR #(\d+)$/.exec(err.object);
    const where = csr ? `csrs[${csr[1]}]` : err.object;
    return failure(grpc.status.INVALID_ARGUMENT, `${where}: ${err.message.slice(err.object.length + 2)}`);
  }
  log.error('control API call failed', { error: String((err as Error)?.stack ?? err) });
  return failure(grpc.status.INTERNAL, `internal error: ${(err as Error)?.message ?? err}`);
}

function isFailure(err: unknown): err is Failure {
  return typeof err === 'object' && err !== null && typeof (err as Failure).code === 'number' && typeof (err as Failure).details === 'string' && !(err instanceof Error);
}

function splitHostPort(listen: string): { host: string; port: string } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen);
  if (!m) throw new NodemeshError(ErrorCode.BAD_ADDRESS, `listen address ${JSON.stringify(listen)}: expected host:port (e.g. 0.0.0.0:15010)`);
  return { host: m[1] ?? m[2] ?? '', port: m[3]! };
}

function defaultServingHosts(host: string): string[] {
  const wildcard = host === '' || host === '0.0.0.0' || host === '::';
  const hosts = wildcard ? ['localhost', '127.0.0.1', hostname()] : [host];
  if (!wildcard && isIP(host) === 0 && host !== 'localhost') hosts.push('localhost');
  return [...new Set(hosts)];
}
