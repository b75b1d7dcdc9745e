// Enrollment: which enrolled local pods are captured how, and the node-level nat
// rules. A pod whose network namespace the agent can enter is captured inside it
// (in-pod-capture.ts: the daemon's listeners and the rules live in the pod); the
// others are captured from the node's namespace as described below, which needs
// an address on the host side of the pod's interface (a bridge gateway).
//
// Node-level capture: everything lives in our own NODEMESH-* chains, jumped to from the top of
// PREROUTING so capture runs before kube-proxy's Service DNAT (the daemon sees the
// VIP and balances itself). Traffic the node itself originates (the daemon's own
// connections, kubelet probes) passes OUTPUT and is never touched. Only new
// connections are captured: conntrack keeps the NAT decision of existing ones.
//
// Service VIPs with an enrolled endpoint on this node are captured too, for any
// other source: kube-proxy's DNAT runs in this same PREROUTING pass, and nat is
// evaluated only once per connection, so a non-mesh pod on this node reaching an
// enrolled pod through its VIP would otherwise bypass inbound capture (and with
// it strict mTLS and authorization). The inbound plaintext listener balances
// those connections itself.

import { isIPv4 } from 'node:net';
import type { ConfigStore } from '../daemon/config-store.ts';
import type { ConfigUpdate } from '../core/types.ts';
import type { CommandLine } from './iptables.ts';
import { firstJumpEdits, iptablesRestore, iptablesSave, parseSavedTable, removalInput, sameRules } from './iptables.ts';
import { InvalidObjectError } from '../core/errors.ts';
import { debug, logger } from '../core/log.ts';
import { InPodCapture } from './in-pod-capture.ts';
import { RulesCheckRotation } from './rules-check-rotation.ts';
import { listNetns } from '../daemon/netns.ts';
import { statSync } from 'node:fs';
import type { PodNetnsFinder } from './pod-netns.ts';

const log = logger('enrollment');
// NODEMESH_DEBUG=enrollment: each change of the capture rules, rule by rule (a resync that changes nothing is silent).
const trace = debug('enrollment');

export const OUTBOUND_CAPTURE_PORT = 15001;
export const INBOUND_PLAINTEXT_PORT = 15006;
export const HBONE_PORT = 15008;

const CHAIN_PREFIX = 'NODEMESH-';
const ENTRY_CHAIN = 'NODEMESH-PREROUTING';
const OUTBOUND_CHAIN = 'NODEMESH-OUTBOUND';
const INBOUND_CHAIN = 'NODEMESH-INBOUND';

export interface CapturedPod {
  ip: string;
  /** For error messages only ("namespace/name"). */
  name?: string;
}

/** A Service VIP and port with an enrolled endpoint on this node. */
export interface CapturedVip {
  ip: string;
  port: number;
}

/**
 * The chain bodies as iptables-save prints them, so the live state can be compared
 * line by line. Per pod: one jump for its outbound and one for its inbound traffic;
 * then per VIP port, a redirect to the inbound plaintext listener (after the pod
 * rules, so enrolled sources still go outbound).
 */
export function captureChainRules(pods: readonly CapturedPod[], vips: readonly CapturedVip[] = []): Map<string, string[]> {
  const ips = new Set<string>();
  for (const pod of pods) {
    checkCapturable(pod);
    ips.add(pod.ip);
  }
  const sorted = [...ips].sort(compareIPv4);
  const vipRules = [...new Set(vips.filter((v) => isIPv4(v.ip)).map((v) => `${v.ip}:${v.port}`))]
    .map((key) => key.split(':') as [string, string])
    .sort(([ipA, portA], [ipB, portB]) => compareIPv4(ipA, ipB) || Number(portA) - Number(portB))
    .map(([ip, port]) => `-A ${ENTRY_CHAIN} -d ${ip}/32 -p tcp -m tcp --dport ${port} -j REDIRECT --to-ports ${INBOUND_PLAINTEXT_PORT}`);
  return new Map([
    [ENTRY_CHAIN, [
      ...sorted.map((ip) => `-A ${ENTRY_CHAIN} -s ${ip}/32 -p tcp -j ${OUTBOUND_CHAIN}`),
      ...sorted.map((ip) => `-A ${ENTRY_CHAIN} -d ${ip}/32 -p tcp -j ${INBOUND_CHAIN}`),
      ...vipRules,
    ]],
    [OUTBOUND_CHAIN, [`-A ${OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports ${OUTBOUND_CAPTURE_PORT}`]],
    [INBOUND_CHAIN, [
      `-A ${INBOUND_CHAIN} -p tcp -m tcp --dport ${HBONE_PORT} -j REDIRECT --to-ports ${HBONE_PORT}`,
      `-A ${INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports ${INBOUND_PLAINTEXT_PORT}`,
    ]],
  ]);
}

function checkCapturable(pod: CapturedPod): void {
  if (!isIPv4(pod.ip)) throw new InvalidObjectError(`pod ${pod.name ?? pod.ip}`, 'ip', `${JSON.stringify(pod.ip)} is not an IPv4 address; only IPv4 pods can be captured`);
}

/**
 * `iptables-restore --noflush` input for table nat. Declaring a chain flushes it
 * (and only it) under --noflush, so the result replaces exactly our chains.
 * `preroutingEdits` are extra lines (moving our jump) applied in the same transaction.
 */
export function renderCaptureRules(pods: readonly CapturedPod[], preroutingEdits: readonly string[] = [], vips: readonly CapturedVip[] = []): string {
  const chains = captureChainRules(pods, vips);
  return [
    '*nat',
    ...[...chains.keys()].map((chain) => `:${chain} - [0:0]`),
    ...[...chains.values()].flat(),
    ...preroutingEdits,
    'COMMIT',
    '',
  ].join('\n');
}

/** Edits that leave exactly one jump to our entry chain, as rule 1 of PREROUTING. */
export function planJumpEdits(natSave: string): string[] {
  return firstJumpEdits(parseSavedTable(natSave, 'nat').rules.get('PREROUTING') ?? [], 'PREROUTING', ENTRY_CHAIN);
}

function compareIPv4(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
  return 0;
}

export interface IptablesCommands {
  /** Default "iptables-restore". */
  iptablesRestore?: CommandLine;
  /** Default "iptables-save". */
  iptablesSave?: CommandLine;
}

function commandsOf(opts: IptablesCommands | undefined): { restore: CommandLine; save: CommandLine } {
  return { restore: opts?.iptablesRestore ?? 'iptables-restore', save: opts?.iptablesSave ?? 'iptables-save' };
}

/** Keeps the node's capture rules equal to a set of pods; a no-op when the live rules already match. */
export class CaptureReconciler {
  readonly #restore: CommandLine;
  readonly #save: CommandLine;
  /** Serializes reconciles so two transactions never race on the same plan. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts?: IptablesCommands) {
    const { restore, save } = commandsOf(opts);
    this.#restore = restore;
    this.#save = save;
  }

  /** Pods with an address that cannot be captured are left out (and logged); the rest are applied. */
  reconcile(pods: readonly CapturedPod[], vips: readonly CapturedVip[] = []): Promise<void> {
    return this.#serialized(() => this.#reconcile(pods, vips));
  }

  uninstall(): Promise<void> {
    return this.#serialized(() => removeCapture({ iptablesRestore: this.#restore, iptablesSave: this.#save }));
  }

  #serialized(task: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #reconcile(pods: readonly CapturedPod[], vips: readonly CapturedVip[]): Promise<void> {
    const capturable: CapturedPod[] = [];
    for (const pod of pods) {
      try {
        checkCapturable(pod);
        capturable.push(pod);
      } catch (err) {
        log.warn('pod not captured', { error: (err as Error).message });
      }
    }
    const save = await iptablesSave(this.#save, 'nat');
    const live = parseSavedTable(save, 'nat');
    const desired = captureChainRules(capturable, vips);
    const jumpEdits = planJumpEdits(save);
    const chainsMatch = [...desired].every(([chain, rules]) => live.chains.includes(chain) && sameRules(live.rules.get(chain) ?? [], rules));
    if (chainsMatch && jumpEdits.length === 0) return;
    if (trace.enabled) trace('changing capture rules', { ...ruleChanges(live.rules, desired), jumpEdits });
    await iptablesRestore(this.#restore, renderCaptureRules(capturable, jumpEdits, vips));
    log.info('capture rules applied', { pods: capturable.length, vips: vips.length, jumpRepaired: jumpEdits.length > 0 });
  }
}


/** The rules of our chains that a reconcile adds and removes, as iptables-save prints them. */
function ruleChanges(live: ReadonlyMap<string, readonly string[]>, desired: ReadonlyMap<string, readonly string[]>): { added: string[]; removed: string[] } {
  const added: string[] = [];
  const removed: string[] = [];
  for (const [chain, rules] of desired) {
    const before = new Set(live.get(chain) ?? []);
    const after = new Set(rules);
    added.push(...rules.filter((r) => !before.has(r)));
    removed.push(...[...before].filter((r) => !after.has(r)));
  }
  return { added, removed };
}

/** Removes the PREROUTING jump, every other rule jumping to our chains, and all NODEMESH-* chains. */
async function removeCapture(opts: IptablesCommands): Promise<void> {
  const { restore, save } = commandsOf(opts);
  const { input, chains } = removalInput(await iptablesSave(save, 'nat'), 'nat', CHAIN_PREFIX);
  if (!input) return;
  await iptablesRestore(restore, input);
  log.info('capture rules removed', { chains });
}

/**
 * `nodemesh node --uninstall`: leaves no NODEMESH rule or chain in the node's nat
 * table and, when `podNetns` is given, none of our rules, chains or reply routes
 * in the pod namespaces it names (on a node: every namespace its runtime keeps).
 */
export async function uninstallCapture(opts: IptablesCommands = {}, podNetns?: { dir?: string; prefix?: string }): Promise<void> {
  await removeCapture(opts);
  if (!podNetns) return;
  const inPod = new InPodCapture({ iptablesRestore: opts.iptablesRestore, iptablesSave: opts.iptablesSave });
  const home = statSync('/proc/self/ns/net').ino;
  for (const { path, inode } of listNetns(podNetns.dir, podNetns.prefix)) {
    if (inode === home) continue;
    try {
      if (await inPod.remove(path)) log.info('in-pod capture removed', { netns: path });
    } catch (err) {
      log.warn('cannot remove in-pod capture from a namespace', { netns: path, error: (err as Error).message });
    }
  }
}

/** Every VIP port of a Service that has an endpoint among the given pods (captured from the node). */
function vipsWithEndpointsIn(store: ConfigStore, podIps: ReadonlySet<string>): CapturedVip[] {
  return store.services()
    .filter((s) => s.endpoints.some((e) => podIps.has(e.ip)))
    .flatMap((s) => s.vips.flatMap((ip) => s.ports.map((p) => ({ ip, port: p.port }))));
}

/** What in-pod capture needs: the data plane's pod listeners, the rules, and where pods' namespaces are. */
export interface InPodEnrollment {
  dataPlane: { attachPod(podIp: string, netnsPath: string): Promise<void>; detachPod(podIp: string): void; attachedPods(): Map<string, string> };
  capture: InPodCapture;
  finder: PodNetnsFinder;
  /** The node's own addresses: their connections to pods (kubelet probes) are not captured. */
  nodeAddresses(): string[];
}

/**
 * Brings in-pod capture to `pods` (IP -> namespace): for a new pod the listeners
 * first, then the rules (so no new connection is refused in between); for a pod
 * that left, the rules first, then the listeners. The rules of pods applied
 * before are read back only when `rotation` says they are due. Returns the pods
 * it could not capture in-pod (they fall back to node-level capture).
 */
async function reconcileInPod(inPod: InPodEnrollment, pods: ReadonlyMap<string, string>, names: ReadonlyMap<string, string>, rotation: RulesCheckRotation, resync: boolean): Promise<Set<string>> {
  const failed = new Set<string>();
  const attached = inPod.dataPlane.attachedPods();
  for (const [ip, netns] of attached) {
    if (pods.get(ip) === netns) continue;
    try {
      await inPod.capture.remove(netns);
    } catch (err) {
      // Its namespace may be gone with the pod.
      trace('in-pod rules not removed', { ip, netns, error: (err as Error).message });
    }
    inPod.dataPlane.detachPod(ip);
    log.info('pod no longer captured in its namespace', { ip, netns });
  }
  const nodeAddresses = inPod.nodeAddresses();
  const keys = new Map([...pods].map(([ip, netns]) => [ip, `${netns} ${nodeAddresses.join(',')}`]));
  const due = rotation.due(keys, resync);
  for (const [ip, netns] of pods) {
    try {
      await inPod.dataPlane.attachPod(ip, netns);
      if (!due.has(ip)) continue;
      if (await inPod.capture.apply(netns, nodeAddresses)) log.info('pod captured in its namespace', { pod: names.get(ip), ip, netns });
      rotation.checked(ip, keys.get(ip)!);
    } catch (err) {
      failed.add(ip);
      rotation.forget(ip);
      inPod.dataPlane.detachPod(ip);
      log.error('cannot capture a pod in its namespace; capturing it from the node instead', { pod: names.get(ip), ip, netns, error: (err as Error).message });
    }
  }
  return failed;
}

export interface EnrollmentLoop {
  /** Resolves once no reconcile is running or pending. */
  settled(): Promise<void>;
  /** The error of the last reconcile, undefined once one succeeded. */
  readonly lastError: Error | undefined;
  /** How each local enrolled pod (by IP) was captured by the last successful reconcile. */
  captured(): ReadonlyMap<string, CaptureMode>;
  stop(): void;
}

/** In the pod's namespace, or from the node's (the fallback). */
export type CaptureMode = 'in-pod' | 'node';

export interface EnrollmentOptions {
  /** After every successful reconcile (readiness). */
  onReconciled?: () => void;
  /** Capture inside pods' namespaces where they can be found and entered; without it every pod is captured from the node. */
  inPod?: InPodEnrollment;
  /**
   * Re-checks the node's live rules this often, to repair drift such as a jump
   * inserted above ours, and a tenth of the pods' in-pod rules (IN_POD_CHECK_ROUNDS). Default 60 s.
   */
  resyncIntervalMs?: number;
  /** First retry delay after a failed reconcile; doubles up to 30 s. Default 1 s. */
  retryDelayMs?: number;
}

const MAX_RETRY_DELAY_MS = 30_000;
/** Resyncs per pass over every pod's in-pod rules: each is read back every 10 minutes by default. */
const IN_POD_CHECK_ROUNDS = 10;

/**
 * Reconciles capture with the store's enrolled local workloads on every change that
 * touches workloads. A burst of changes while a reconcile runs costs one more
 * reconcile, not one per change; failures are retried with backoff.
 */
export function enrollmentFromConfig(store: ConfigStore, reconciler: CaptureReconciler, opts: EnrollmentOptions = {}): EnrollmentLoop {
  const baseRetry = opts.retryDelayMs ?? 1000;
  let running: Promise<void> | undefined;
  let pending = false;
  let stopped = false;
  let lastError: Error | undefined;
  let captured = new Map<string, CaptureMode>();
  let retryDelay = baseRetry;
  let retryTimer: NodeJS.Timeout | undefined;
  const rotation = new RulesCheckRotation(IN_POD_CHECK_ROUNDS);
  let resyncDue = false;

  const runOnce = async (): Promise<void> => {
    const resync = resyncDue;
    resyncDue = false;
    const local = store.localWorkloads();
    const names = new Map(local.map((w) => [w.ip, `${w.namespace}/${w.name}`]));
    try {
      const { inPod } = opts;
      const inPodPods = inPod ? inPod.finder.find(local.map((w) => w.ip)) : new Map<string, string>();
      const fellBack = inPod ? await reconcileInPod(inPod, inPodPods, names, rotation, resync) : new Set<string>();
      const fromNode = local.filter((w) => !inPodPods.has(w.ip) || fellBack.has(w.ip));
      const pods = fromNode.map((w) => ({ ip: w.ip, name: `${w.namespace}/${w.name}` }));
      await reconciler.reconcile(pods, vipsWithEndpointsIn(store, new Set(pods.map((p) => p.ip))));
      captured = new Map(local.map((w) => [w.ip, inPodPods.has(w.ip) && !fellBack.has(w.ip) ? 'in-pod' as const : 'node' as const]));
      lastError = undefined;
      retryDelay = baseRetry;
      opts.onReconciled?.();
    } catch (err) {
      lastError = err as Error;
      log.error('capture reconcile failed; retrying', { error: lastError.message, retryInMs: retryDelay });
      clearTimeout(retryTimer);
      retryTimer = setTimeout(trigger, retryDelay);
      retryTimer.unref();
      retryDelay = Math.min(retryDelay * 2, MAX_RETRY_DELAY_MS);
    }
  };

  function trigger(): void {
    if (stopped) return;
    if (running) {
      pending = true;
      return;
    }
    clearTimeout(retryTimer);
    running = (async () => {
      do {
        pending = false;
        await runOnce();
      } while (pending && !stopped);
      running = undefined;
    })();
  }

  const capturing = (kind: string) => kind === 'workload' || kind === 'service';
  store.onChange((update: ConfigUpdate) => {
    if (update.snapshot || update.upserts.some((r) => capturing(r.kind)) || update.removals.some((k) => capturing(k.kind))) trigger();
  });
  const resync = setInterval(() => {
    resyncDue = true;
    trigger();
  }, opts.resyncIntervalMs ?? 60_000);
  resync.unref();
  if (store.synced) trigger();

  return {
    async settled() {
      while (running) await running;
    },
    get lastError() {
      return lastError;
    },
    captured: () => captured,
    stop() {
      stopped = true;
      clearInterval(resync);
      clearTimeout(retryTimer);
    },
  };
}
