// TEST SUPPORT — a FAKE Kubernetes API server. It speaks just enough of the real
// protocol for the control plane's Kubernetes parts to be tested over real HTTPS:
// list, watch from a resourceVersion (newline-delimited events), get/create/replace,
// the status subresource of routes (GET, and PATCH as a JSON merge patch of
// `status` alone, with metadata.generation kept as the real server keeps it),
// and TokenReview. Tests steer it into the failures a real cluster produces:
// compacted history (410 Gone), dropped watches, CRDs that are not installed.

import * as https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID, webcrypto } from 'node:crypto';
import * as x509 from '../x509.ts';
import { KubeConfig } from '@kubernetes/client-node';

interface ResourceDef {
  kind: string;
  apiVersion: string;
  plural: string;
  namespaced: boolean;
  /** Has a status subresource: writes to the object keep its status, /status writes only that. */
  status?: boolean;
}

const RESOURCES: readonly ResourceDef[] = [
  { kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces', namespaced: false },
  { kind: 'Pod', apiVersion: 'v1', plural: 'pods', namespaced: true },
  { kind: 'Service', apiVersion: 'v1', plural: 'services', namespaced: true },
  { kind: 'Secret', apiVersion: 'v1', plural: 'secrets', namespaced: true },
  { kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', plural: 'endpointslices', namespaced: true },
  { kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', plural: 'httproutes', namespaced: true, status: true },
  { kind: 'GRPCRoute', apiVersion: 'gateway.networking.k8s.io/v1', plural: 'grpcroutes', namespaced: true, status: true },
  { kind: 'ReferenceGrant', apiVersion: 'gateway.networking.k8s.io/v1beta1', plural: 'referencegrants', namespaced: true },
  { kind: 'AuthorizationPolicy', apiVersion: 'security.nodemesh.io/v1alpha1', plural: 'authorizationpolicies', namespaced: true },
];

export type FakeObject = { metadata: Record<string, unknown> } & Record<string, unknown>;

/** What the fake's TokenReview answers for a token it was given with `addToken`. */
export interface FakeToken {
  username: string;
  /** The token's own audiences (the `aud` claim). */
  audiences: string[];
  extra?: Record<string, string[]>;
  expired?: boolean;
}

interface HistoryEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: FakeObject;
}

interface Watcher {
  def: ResourceDef;
  namespace: string;
  res: ServerResponse;
}

const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export class FakeApiServer {
  readonly adminToken = `fake-admin-${randomUUID()}`;
  /** false: TokenReview ignores spec.audiences, as an audience-unaware authenticator does. */
  audienceAware = true;
  readonly #server: https.Server;
  readonly #caPem: string;
  readonly #objects = new Map<ResourceDef, Map<string, FakeObject>>(RESOURCES.map((d) => [d, new Map()]));
  readonly #history: HistoryEvent[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #absent = new Set<string>();
  readonly #tokens = new Map<string, FakeToken>();
  readonly #requests: { method: string; path: string; watch: boolean }[] = [];
  readonly #sockets = new Set<Socket>();
  #stopped = false;
  #port = 0;
  #rv = 100;
  #compactedRv = 0;

  private constructor(server: https.Server, caPem: string) {
    this.#server = server;
    this.#caPem = caPem;
    server.on('request', (req, res) => this.#handle(req, res));
    // Tracked at the TCP level: a client reconnecting while the fake stops may be
    // mid-handshake, which closeAllConnections() does not see.
    server.on('connection', (socket: Socket) => {
      if (this.#stopped) {
        socket.destroy();
        return;
      }
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
  }

  static async start(): Promise<FakeApiServer> {
    const { certPem, keyPem } = await selfSignedLoopbackCert();
    const server = https.createServer({ cert: certPem, key: keyPem });
    const fake = new FakeApiServer(server, certPem);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    fake.#port = (server.address() as AddressInfo).port;
    return fake;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  /** A KubeConfig that trusts the fake's certificate and authenticates with `token`. */
  kubeConfig(token = this.adminToken): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, caData: Buffer.from(this.#caPem).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'fake-admin', token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake-admin' }],
      currentContext: 'fake',
    });
    return kc;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    this.#watchers.clear();
    await closed;
  }

  // ---- steering ----

  /** Creates or replaces an object, as `kubectl apply` would; returns what is stored. */
  apply(obj: FakeObject): FakeObject {
    const def = defByKind(String(obj.kind));
    const meta = obj.metadata;
    const key = keyOf(def, String(meta.namespace ?? ''), String(meta.name));
    const existing = this.#objects.get(def)!.get(key);
    return this.#store(def, key, obj, existing);
  }

  /** Stores an object without any validation (a malformed object a buggy client wrote). */
  applyMalformed(kind: string, obj: Record<string, unknown>): void {
    const def = defByKind(kind);
    this.#store(def, `malformed/${randomUUID()}`, { metadata: {}, ...obj } as FakeObject, undefined);
  }

  delete(kind: string, namespace: string, name: string): void {
    const def = defByKind(kind);
    const key = keyOf(def, namespace, name);
    const existing = this.#objects.get(def)!.get(key);
    if (!existing) throw new Error(`fake API server: no ${kind} ${key} to delete`);
    this.#objects.get(def)!.delete(key);
    const rv = ++this.#rv;
    const object = { ...existing, metadata: { ...existing.metadata, resourceVersion: String(rv) } };
    this.#publish(def, { rv, type: 'DELETED', object });
  }

  get(kind: string, namespace: string, name: string): FakeObject | undefined {
    const def = defByKind(kind);
    return this.#objects.get(def)!.get(keyOf(def, namespace, name));
  }

  /** Makes the kind's CRD absent (404 on every request) or present again. */
  setCrdInstalled(kind: string, installed: boolean): void {
    if (installed) this.#absent.delete(kind);
    else this.#absent.add(kind);
  }

  /** Forgets all watch history, as etcd compaction does: older resourceVersions get 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history.length = 0;
  }

  /** Cuts every open watch connection mid-stream. */
  dropWatches(): void {
    for (const w of this.#watchers) w.res.socket?.destroy();
    this.#watchers.clear();
  }

  openWatches(kind: string): number {
    return [...this.#watchers].filter((w) => w.def.kind === kind).length;
  }

  /** Requests served so far, to see lists and watches a client made. */
  requests(filter: { method?: string; path?: string; watch?: boolean } = {}): number {
    return this.#requests.filter((r) => (filter.method === undefined || r.method === filter.method)
      && (filter.path === undefined || r.path === filter.path)
      && (filter.watch === undefined || r.watch === filter.watch)).length;
  }

  addToken(token: string, review: FakeToken): void {
    this.#tokens.set(token, review);
  }

  // ---- storage ----

  #store(def: ResourceDef, key: string, obj: FakeObject, existing: FakeObject | undefined): FakeObject {
    const rv = ++this.#rv;
    const oldMeta = existing?.metadata ?? {};
    // The real server counts spec changes in metadata.generation; status writes leave it.
    const generation = !existing ? 1 : Number(oldMeta.generation ?? 1) + (JSON.stringify(existing.spec) === JSON.stringify(obj.spec) ? 0 : 1);
    const stored: FakeObject = {
      ...obj,
      apiVersion: def.apiVersion,
      kind: def.kind,
      ...(def.status && existing && existing.status !== undefined && obj.status === undefined ? { status: existing.status } : {}),
      metadata: {
        ...obj.metadata,
        generation,
        uid: oldMeta.uid ?? obj.metadata.uid ?? randomUUID(),
        creationTimestamp: oldMeta.creationTimestamp ?? obj.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        resourceVersion: String(rv),
      },
    };
    this.#objects.get(def)!.set(key, stored);
    this.#publish(def, { rv, type: existing ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  #publish(def: ResourceDef, event: HistoryEvent): void {
    this.#history.push(event);
    for (const w of this.#watchers) {
      if (w.def === def && matchesNamespace(event.object, w.namespace)) writeEvent(w.res, event.type, event.object);
    }
  }

  // ---- HTTP ----

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    this.#requests.push({ method: req.method ?? '', path: url.pathname, watch });
    if (req.headers.authorization !== `Bearer ${this.adminToken}`) {
      sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: unknown;
      try {
        body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
      } catch {
        sendStatus(res, 400, 'BadRequest', 'request body is not JSON');
        return;
      }
      this.#route(req.method ?? 'GET', url, watch, body, res, String(req.headers['content-type'] ?? ''));
    });
  }

  #route(method: string, url: URL, watch: boolean, body: unknown, res: ServerResponse, contentType = ''): void {
    if (method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
      sendJson(res, 201, this.#review(body as { spec?: { token?: string; audiences?: string[] } }));
      return;
    }
    const target = parsePath(url.pathname);
    if (!target) {
      sendStatus(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
      return;
    }
    const { def, namespace, name, subresource } = target;
    if (this.#absent.has(def.kind)) {
      sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const objects = this.#objects.get(def)!;
    if (subresource) return this.#status(def, method, contentType, keyOf(def, namespace, name), name, body, res);
    if (method === 'GET' && !name && watch) return this.#watch(def, namespace, url.searchParams.get('resourceVersion') ?? '', res);
    if (method === 'GET' && !name) {
      const items = [...objects.values()].filter((o) => matchesNamespace(o, namespace)).map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
      sendJson(res, 200, { apiVersion: def.apiVersion, kind: `${def.kind}List`, metadata: { resourceVersion: String(this.#rv) }, items });
      return;
    }
    if (method === 'GET') {
      const found = objects.get(keyOf(def, namespace, name));
      if (found) sendJson(res, 200, found);
      else sendStatus(res, 404, 'NotFound', `${def.plural} "${name}" not found`);
      return;
    }
    const obj = body as FakeObject | undefined;
    if (!obj || typeof obj.metadata !== 'object' || !obj.metadata?.name) {
      sendStatus(res, 422, 'Invalid', `${def.kind} is invalid: metadata.name: Required value`);
      return;
    }
    const objName = String(obj.metadata.name);
    const key = keyOf(def, namespace, objName);
    const existing = objects.get(key);
    if (method === 'POST' && !name) {
      if (existing) {
        sendStatus(res, 409, 'AlreadyExists', `${def.plural} "${objName}" already exists`);
        return;
      }
      sendJson(res, 201, this.#store(def, key, { ...obj, metadata: { ...obj.metadata, namespace } }, undefined));
      return;
    }
    if (method === 'PUT' && name === objName) {
      if (!existing) {
        sendStatus(res, 404, 'NotFound', `${def.plural} "${name}" not found`);
        return;
      }
      const wantRv = obj.metadata.resourceVersion;
      if (wantRv !== undefined && wantRv !== existing.metadata.resourceVersion) {
        sendStatus(res, 409, 'Conflict', `Operation cannot be fulfilled on ${def.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
        return;
      }
      if (existing.immutable === true && JSON.stringify(existing.data) !== JSON.stringify(obj.data)) {
        sendStatus(res, 422, 'Invalid', `${def.kind} "${name}" is invalid: data: Forbidden: field is immutable when \`immutable\` is set`);
        return;
      }
      sendJson(res, 200, this.#store(def, key, { ...obj, metadata: { ...obj.metadata, namespace } }, existing));
      return;
    }
    sendStatus(res, 405, 'MethodNotAllowed', `${method} ${url.pathname} is not supported by the fake API server`);
  }

  /** GET or merge-PATCH of .../NAME/status: only `status` changes; a stale metadata.resourceVersion is a 409. */
  #status(def: ResourceDef, method: string, contentType: string, key: string, name: string, body: unknown, res: ServerResponse): void {
    const existing = this.#objects.get(def)!.get(key);
    if (!def.status) return sendStatus(res, 404, 'NotFound', `${def.plural} has no status subresource`);
    if (!existing) return sendStatus(res, 404, 'NotFound', `${def.plural} "${name}" not found`);
    if (method === 'GET') return sendJson(res, 200, existing);
    if (method !== 'PATCH') return sendStatus(res, 405, 'MethodNotAllowed', `${method} of a status subresource is not supported by the fake API server`);
    if (!contentType.startsWith('application/merge-patch+json')) {
      return sendStatus(res, 415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got ${contentType || 'none'})`);
    }
    const patch = (body ?? {}) as { metadata?: { resourceVersion?: string }; status?: unknown };
    const wantRv = patch.metadata?.resourceVersion;
    if (wantRv !== undefined && wantRv !== existing.metadata.resourceVersion) {
      return sendStatus(res, 409, 'Conflict', `Operation cannot be fulfilled on ${def.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    const status = mergePatch(existing.status, patch.status);
    sendJson(res, 200, this.#store(def, key, { ...existing, status } as FakeObject, existing));
  }

  #watch(def: ResourceDef, namespace: string, fromRv: string, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The real API server answers a watch at once, before any event.
    res.flushHeaders();
    const from = Number(fromRv || 0);
    if (fromRv && from < this.#compactedRv) {
      writeEvent(res, 'ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason: 'Expired', code: 410, message: `too old resource version: ${fromRv} (${this.#compactedRv})` });
      res.end();
      return;
    }
    if (!fromRv) {
      for (const o of this.#objects.get(def)!.values()) if (matchesNamespace(o, namespace)) writeEvent(res, 'ADDED', o);
    } else {
      for (const e of this.#history) if (e.rv > from && this.#defOf(e) === def && matchesNamespace(e.object, namespace)) writeEvent(res, e.type, e.object);
    }
    const watcher: Watcher = { def, namespace, res };
    this.#watchers.add(watcher);
    res.on('close', () => this.#watchers.delete(watcher));
  }

  #defOf(e: HistoryEvent): ResourceDef {
    return defByKind(String(e.object.kind));
  }

  #review(body: { spec?: { token?: string; audiences?: string[] } }): unknown {
    const wanted = body?.spec?.audiences ?? [];
    const token = this.#tokens.get(body?.spec?.token ?? '');
    const answer = (status: Record<string, unknown>) => ({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: {}, spec: { audiences: wanted }, status });
    if (!token) return answer({ user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' });
    if (token.expired) return answer({ user: {}, error: '[invalid bearer token, token has been invalidated]' });
    let audiences = token.audiences;
    if (this.audienceAware) {
      const target = wanted.length ? wanted : [API_SERVER_AUDIENCE];
      audiences = token.audiences.filter((a) => target.includes(a));
      if (!audiences.length) return answer({ user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(token.audiences)} is invalid for the target audiences ${JSON.stringify(target)}]` });
    } else {
      audiences = [];
    }
    return answer({
      authenticated: true,
      user: { username: token.username, uid: randomUUID(), groups: ['system:serviceaccounts', 'system:authenticated'], extra: token.extra ?? {} },
      audiences,
    });
  }
}

function defByKind(kind: string): ResourceDef {
  const def = RESOURCES.find((d) => d.kind === kind);
  if (!def) throw new Error(`fake API server: kind ${JSON.stringify(kind)} is not served`);
  return def;
}

function keyOf(def: ResourceDef, namespace: string, name: string): string {
  return def.namespaced ? `${namespace}/${name}` : name;
}

function matchesNamespace(obj: FakeObject, namespace: string): boolean {
  return !namespace || obj.metadata.namespace === namespace;
}

/** RFC 7386: objects merge key by key, null deletes, anything else replaces (lists whole). */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...target as Record<string, unknown> } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** /api/v1[/namespaces/NS]/PLURAL[/NAME[/status]] and /apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/status]]. */
function parsePath(pathname: string): { def: ResourceDef; namespace: string; name: string; subresource: string } | undefined {
  const parts = pathname.split('/').filter(Boolean);
  let apiVersion: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') {
    apiVersion = 'v1';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    apiVersion = `${parts[1]}/${parts[2]}`;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let namespace = '';
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1]!;
    rest = rest.slice(2);
  }
  const def = RESOURCES.find((d) => d.apiVersion === apiVersion && d.plural === rest[0]);
  if (!def || rest.length > 3 || (rest.length === 3 && rest[2] !== 'status')) return undefined;
  return { def, namespace, name: rest[1] ?? '', subresource: rest[2] ?? '' };
}

function writeEvent(res: ServerResponse, type: string, object: unknown): void {
  res.write(JSON.stringify({ type, object }) + '\n');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason, message, code });
}

async function selfSignedLoopbackCert(): Promise<{ certPem: string; keyPem: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=fake-kube-apiserver',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    keys: keys as unknown as CryptoKeyPair,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]),
    ],
  }, webcrypto as unknown as Crypto);
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}
