// Destination-side admission: the one place that answers "may this source reach
// this workload?" for every path that delivers to a local pod — the HBONE and
// plaintext inbound listeners, the same-node path of the outbound listener, and
// each HTTP request authorized at L7 (on the destination node, or in-process for
// a same-node destination). It decides (the destination's current mTLS mode,
// then its policies), and a refusal is counted and logged here, once, with what
// the operator needs; the caller only refuses in its transport's way (a reset, an
// HBONE 403, an HTTP 403). `decide` alone (no count, no log) re-checks open
// connections after a config change and answers /explain. `refuse` counts and
// logs the refusals the HBONE listener decides before policy (a Forwarded header
// not bound to the peer's identity, a peer over its stream limit, a handshake past
// its deadline), so every refusal is in the same counter and log shape, and
// each one is a `refusal` event on the tap (tap.ts) with its reason.

import type { Workload } from '../core/types.ts';
import type { Logger } from '../core/log.ts';
import { logger } from '../core/log.ts';
import type { ConfigStore } from './config-store.ts';
import { authorize } from './authorization.ts';
import type { AuthorizationInput, Decision } from './authorization.ts';
import type { DaemonMetrics, DeniedReason } from './metrics.ts';
import type { Tap } from './tap.ts';
import { workloadRef } from './tap.ts';

const defaultLog = logger('admission');

/** What was refused, for the log line: "<what> refused: <reason>". */
export interface AdmissionContext {
  /** "inbound plaintext connection", "HBONE tunnel", "same-node connection", "HTTP request". */
  what: string;
  /** The listener's logger, so the refusal is logged under the listener that refused. */
  log?: Logger;
  /** Extra fields for the log line (the original destination, the HBONE :authority). */
  fields?: Record<string, unknown>;
}

/** A refusal decided before any policy is consulted. */
export interface Refusal {
  destination: Workload;
  sourcePrincipal: string | null;
  reason: Exclude<DeniedReason, 'policy' | 'strict_mtls' | 'policy_changed'>;
  /** For the log line and the peer: what was wrong. */
  message: string;
  /** The source pod's IP when known (the Forwarded one), for the tap. */
  sourceIp?: string;
  /** The destination port when known, for the tap. */
  port?: number;
}

export class Admission {
  readonly #config: ConfigStore;
  readonly #metrics: DaemonMetrics;
  readonly #tap: Tap | undefined;

  constructor(config: ConfigStore, metrics: DaemonMetrics, tap?: Tap) {
    this.#config = config;
    this.#metrics = metrics;
    this.#tap = tap;
  }

  /** Decides; a refusal is counted (`nodemesh_tcp_connections_denied_total`) and logged. */
  admit(input: AuthorizationInput, ctx: AdmissionContext): Decision {
    const decision = decide(this.#config, input);
    if (decision.allowed) return decision;
    const { destination, sourcePrincipal, sourceIp } = input;
    this.#metrics.tcpDenied.inc({
      reporter: 'destination', destination_workload: destination.workloadName, destination_workload_namespace: destination.namespace,
      source_principal: sourcePrincipal ?? 'unknown', reason: decision.strictMtls ? 'strict_mtls' : 'policy',
    });
    (ctx.log ?? defaultLog).warn(`${ctx.what} refused: ${decision.reason}`, {
      source: sourcePrincipal, sourceIp, destination: `${destination.ip}:${input.port}`,
      ...(input.http ? { method: input.http.method, path: input.http.path } : {}),
      policy: decision.policy, ...ctx.fields,
    });
    if (this.#tap?.active) {
      this.#publishRefusal(ctx, decision.strictMtls ? 'strict_mtls' : 'policy', decision.reason, destination, sourcePrincipal, sourceIp, input.port, {
        ...(decision.policy ? { policy: decision.policy } : {}),
        ...(input.http ? { method: input.http.method, path: input.http.path } : {}),
      });
    }
    return decision;
  }

  /** Counts and logs a refusal decided before policy; `quiet` logs it at debug, for what a flood repeats. */
  refuse(refusal: Refusal, ctx: AdmissionContext & { quiet?: boolean }): void {
    const { destination, sourcePrincipal, reason } = refusal;
    this.#metrics.tcpDenied.inc({
      reporter: 'destination', destination_workload: destination.workloadName, destination_workload_namespace: destination.namespace,
      source_principal: sourcePrincipal ?? 'unknown', reason,
    });
    const log = ctx.log ?? defaultLog;
    (ctx.quiet ? log.debug : log.warn)(`${ctx.what} refused: ${refusal.message}`, {
      source: sourcePrincipal, destination: destination.ip, reason, ...ctx.fields,
    });
    if (this.#tap?.active) this.#publishRefusal(ctx, reason, refusal.message, destination, sourcePrincipal, refusal.sourceIp ?? null, refusal.port);
  }

  /** The tap's `refusal` event: what was refused, why (the metric's reason), and both ends. */
  #publishRefusal(
    ctx: AdmissionContext, reason: DeniedReason, message: string, destination: Workload, sourcePrincipal: string | null,
    sourceIp: string | null, port: number | undefined, extra: Record<string, unknown> = {},
  ): void {
    const source = sourceIp ? this.#config.workloadByIp(sourceIp) : undefined;
    this.#tap!.publish({
      event: 'refusal', reporter: 'destination', what: ctx.what, reason, message, ...extra,
      source: { ip: sourceIp ?? (typeof ctx.fields?.peer === 'string' ? ctx.fields.peer : 'unknown'), workload: workloadRef(source), identity: sourcePrincipal },
      destination: { ip: destination.ip, ...(port !== undefined ? { port } : {}), workload: workloadRef(destination), identity: this.#config.identityOf(destination) },
    });
  }
}

/** The decision alone: the destination's current mTLS mode, then its policies. */
export function decide(config: ConfigStore, input: AuthorizationInput): Decision {
  // Re-read the workload: its labels (policy selectors) or mode may have changed.
  const destination = config.workloadByUid(input.destination.uid) ?? input.destination;
  if (input.sourcePrincipal === null && destination.mtlsMode === 'strict') {
    return {
      allowed: false,
      strictMtls: true,
      reason: `namespace ${destination.namespace} requires mutual TLS (nodemesh.io/mtls-mode: strict): plaintext from ${input.sourceIp} refused`,
    };
  }
  return authorize({ ...input, destination }, config.policiesFor(destination));
}
