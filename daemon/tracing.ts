// Tracing of the HTTP and gRPC requests the node proxies, as Istio's and
// Linkerd's proxies do it: W3C `traceparent` propagated (the request goes on
// as a child of this node's span, or untouched when nothing is exported),
// `x-request-id` added when absent, and with `--otlp-endpoint` one span per
// request and side — a CLIENT span on the source node, a SERVER span on the
// destination node, children of the caller's span — exported with OpenTelemetry
// over OTLP/HTTP (JSON) in batches. The SDK is loaded only when an endpoint is
// set, so a node without one pays nothing for it. `--access-log-requests` adds a
// JSON access-log line per request carrying its trace id.

import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Span, Tracer } from '@opentelemetry/api';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { logger } from '../core/log.ts';

const log = logger('tracing');
const access = logger('access');

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

export interface TracingOptions {
  /** OTLP/HTTP base URL (`http://collector:4318`); spans go to its /v1/traces. No export without it. */
  otlpEndpoint?: string;
  /** The node's name, as the spans' resource says it. */
  nodeName: string;
  /** A JSON access-log line per request, with its trace id. */
  accessLogRequests?: boolean;
  /** How long spans wait to be exported in a batch (default 1 s). */
  exportDelayMs?: number;
}

/** What one request looks like to its span and its access-log line. */
export interface RequestFacts {
  method: string;
  path: string;
  protocol: 'http1' | 'http2';
  sourceIp: string;
  sourceWorkload: string | null;
  sourceIdentity: string | null;
  destination: string;
  destinationWorkload: string | null;
  destinationIdentity: string | null;
  service: string | null;
}

export interface RequestTrace {
  /** The trace the request is in (null when it carries none and nothing is exported). */
  readonly traceId: string | null;
  readonly requestId: string;
  /** Records the response; ends the span, writes the access-log line. Idempotent. */
  end(status: number, facts: Partial<RequestFacts>): void;
}

export class TracingConfigError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.BAD_TRACING, message);
  }
}

/** Checks --otlp-endpoint: an http(s) URL without credentials, query or fragment. */
export function parseOtlpEndpoint(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TracingConfigError(`--otlp-endpoint: ${JSON.stringify(value.slice(0, 80))} is not a URL (e.g. http://otel-collector.observability:4318)`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.search || url.hash) {
    throw new TracingConfigError(`--otlp-endpoint: ${JSON.stringify(value.slice(0, 80))} must be http:// or https://, with no credentials, query or fragment`);
  }
  return url.href.replace(/\/+$/, '');
}

export class Tracing {
  readonly #opts: TracingOptions;
  readonly #tracer: Tracer | undefined;
  readonly #shutdown: () => Promise<void>;
  readonly #api: typeof import('@opentelemetry/api') | undefined;

  private constructor(opts: TracingOptions, otel?: { api: typeof import('@opentelemetry/api'); tracer: Tracer; shutdown: () => Promise<void> }) {
    this.#opts = opts;
    this.#api = otel?.api;
    this.#tracer = otel?.tracer;
    this.#shutdown = otel?.shutdown ?? (async () => {});
  }

  static async create(opts: TracingOptions): Promise<Tracing> {
    if (!opts.otlpEndpoint) return new Tracing(opts);
    const endpoint = parseOtlpEndpoint(opts.otlpEndpoint);
    const [api, { TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
      import('@opentelemetry/api'), import('@opentelemetry/sdk-trace'), import('@opentelemetry/exporter-trace-otlp-http'), import('@opentelemetry/resources'),
    ]);
    const exporter = new OTLPTraceExporter({ url: `${endpoint}/v1/traces` });
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'nodemesh-node', 'host.name': opts.nodeName, 'k8s.node.name': opts.nodeName }),
      spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: opts.exportDelayMs ?? 1000, maxQueueSize: 4096 })],
    });
    log.info('exporting request spans over OTLP/HTTP', { endpoint: `${endpoint}/v1/traces` });
    return new Tracing(opts, { api, tracer: provider.getTracer('nodemesh'), shutdown: () => provider.shutdown() });
  }

  /** Whether each request leaves a record here: a span exported or an access-log line. */
  get recordsRequests(): boolean {
    return this.#tracer !== undefined || this.#opts.accessLogRequests === true;
  }

  /**
   * Starts the trace of a request arriving with `headers`, and sets on them what
   * goes on with it: `x-request-id` when absent, `traceparent` of this node's
   * span when exporting.
   */
  start(side: 'source' | 'destination', headers: IncomingHttpHeaders, facts: Pick<RequestFacts, 'method' | 'path'>): RequestTrace {
    let requestId = typeof headers['x-request-id'] === 'string' && REQUEST_ID.test(headers['x-request-id']) ? headers['x-request-id'] : undefined;
    if (!requestId) {
      requestId = randomUUID();
      headers['x-request-id'] = requestId;
    }
    const incoming = typeof headers.traceparent === 'string' ? TRACEPARENT.exec(headers.traceparent) : null;
    const parent = incoming && incoming[1] !== 'ff' && !/^0+$/.test(incoming[2]!) && !/^0+$/.test(incoming[3]!) ? incoming : null;
    let span: Span | undefined;
    let traceId = parent?.[2] ?? null;
    if (this.#tracer && this.#api) {
      const api = this.#api;
      const ctx = parent
        ? api.trace.setSpanContext(api.ROOT_CONTEXT, { traceId: parent[2]!, spanId: parent[3]!, traceFlags: Number.parseInt(parent[4]!, 16) & 1, isRemote: true })
        : api.ROOT_CONTEXT;
      span = this.#tracer.startSpan(facts.method, {
        kind: side === 'source' ? api.SpanKind.CLIENT : api.SpanKind.SERVER,
        attributes: { 'http.request.method': facts.method, 'url.path': facts.path, 'nodemesh.reporter': side, 'nodemesh.request_id': requestId },
      }, ctx);
      const sc = span.spanContext();
      traceId = sc.traceId;
      headers.traceparent = `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}`;
    }
    let ended = false;
    const accessLog = this.#opts.accessLogRequests;
    return {
      traceId,
      requestId,
      end: (status, more) => {
        if (ended) return;
        ended = true;
        if (span) {
          span.setAttributes({
            'http.response.status_code': status,
            ...(more.sourceIdentity ? { 'nodemesh.source.identity': more.sourceIdentity } : {}),
            ...(more.destinationIdentity ? { 'nodemesh.destination.identity': more.destinationIdentity } : {}),
            ...(more.sourceWorkload ? { 'nodemesh.source.workload': more.sourceWorkload } : {}),
            ...(more.destinationWorkload ? { 'nodemesh.destination.workload': more.destinationWorkload } : {}),
            ...(more.service ? { 'nodemesh.destination.service': more.service } : {}),
            ...(more.destination ? { 'server.address': more.destination } : {}),
            ...(more.sourceIp ? { 'client.address': more.sourceIp } : {}),
          });
          if (status === 0 || status >= 500) span.setStatus({ code: this.#api!.SpanStatusCode.ERROR });
          span.end();
        }
        if (accessLog) {
          access.info('request', { reporter: side, ...facts, ...more, status, traceId, requestId });
        }
      },
    };
  }

  /** Exports what is queued, then stops. */
  shutdown(): Promise<void> {
    return this.#shutdown();
  }
}
