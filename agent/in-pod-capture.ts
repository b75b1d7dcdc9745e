// In-pod capture: the redirect rules of an enrolled pod live inside the pod's
// own network namespace, as Istio ambient's in-pod mode does, so capture does
// not depend on how the CNI wires the host side (a bridge with a gateway
// address, address-less routed veths, per-pod policy routing, or a datapath
// that never passes the node's netfilter). Inside the pod REDIRECT always has an
// address to redirect to, and the node proxy's listeners for the pod (15001,
// 15006, 15008) are sockets the daemon created in that namespace.
//
//   nat OUTPUT      the pod's own TCP -> 15001, except the mesh's marked
//                   deliveries and pod-local (loopback) traffic
//   nat PREROUTING  TCP arriving at the pod -> 15006, except HBONE (15008, served
//                   in the pod as it is) and connections from the node itself
//                   (kubelet probes, as before)
//   mangle          the mesh mark follows a delivery's connection, so replies to
//                   the client's address (the delivery is transparent) are routed
//                   to the proxy's socket: `ip rule fwmark 0x539 -> table 133:
//                   local 0.0.0.0/0 dev lo`
//
// Fail closed: the rules stay when the daemon stops, and redirect to ports
// nobody listens on, so the pod's new connections are refused, never sent in
// clear. Connections open when the rules arrive keep flowing: only SYNs are
// redirected. Applied idempotently, one iptables-restore for both tables per
// change, and adopted by a restarted daemon.

import type { CommandLine } from './iptables.ts';
import { firstJumpEdits, iptablesRestore, iptablesSave, parseSavedTable, removalInput, runCommand, sameRules } from './iptables.ts';
import { MESH_MARK, MESH_MARK_MASK } from '../daemon/pod-socket.ts';
import { debug } from '../core/log.ts';

const trace = debug('enrollment');

const OUTBOUND_PORT = 15001;
const INBOUND_PLAINTEXT_PORT = 15006;
const HBONE_PORT = 15008;
/** The routing table and rule priority of the reply route for transparent deliveries. */
export const REPLY_TABLE = 133;
const REPLY_RULE_PRIORITY = 32_000;

const MARK = `0x${MESH_MARK.toString(16)}/0x${MESH_MARK_MASK.toString(16)}`;
/**
 * Only a connection's SYN is redirected. A pod's namespace may have had no
 * conntrack hooks before our rules (they are registered on first use), so a
 * connection open at enrollment is first seen mid-stream and counts as new; its
 * next segment must not be redirected to a listener that never saw it (a reset).
 * As iptables-save prints `--syn`.
 */
const SYN_ONLY = '--tcp-flags FIN,SYN,RST,ACK SYN';
const NAT_OUTPUT = 'NODEMESH-OUTPUT';
const NAT_PREROUTING = 'NODEMESH-PREROUTING';
const MANGLE_OUTPUT = 'NODEMESH-OUTPUT';
const MANGLE_PREROUTING = 'NODEMESH-PREROUTING';

export interface InPodCommands {
  /** Default "iptables-restore". */
  iptablesRestore?: CommandLine;
  /** Default "iptables-save". */
  iptablesSave?: CommandLine;
  /** Default "ip". */
  ip?: CommandLine;
}

/** Our chains of one table as iptables-save prints them, and the jumps into them. */
interface TablePlan {
  table: 'nat' | 'mangle';
  chains: Map<string, string[]>;
  /** builtin chain -> our chain it must jump to first. */
  jumps: Map<string, string>;
}

/** The rules inside a pod, given the node's own addresses (whose connections are not captured). */
export function inPodTables(nodeAddresses: readonly string[]): TablePlan[] {
  const fromNode = [...new Set(nodeAddresses)].sort().map((ip) => `-A ${NAT_PREROUTING} -s ${ip}/32 -j RETURN`);
  return [
    {
      table: 'nat',
      chains: new Map([
        [NAT_OUTPUT, [
          `-A ${NAT_OUTPUT} -m mark --mark ${MARK} -j RETURN`,
          `-A ${NAT_OUTPUT} -o lo -j RETURN`,
          `-A ${NAT_OUTPUT} -p tcp -m tcp ${SYN_ONLY} -j REDIRECT --to-ports ${OUTBOUND_PORT}`,
        ]],
        [NAT_PREROUTING, [
          `-A ${NAT_PREROUTING} -i lo -j RETURN`,
          ...fromNode,
          `-A ${NAT_PREROUTING} -p tcp -m tcp --dport ${HBONE_PORT} -j RETURN`,
          `-A ${NAT_PREROUTING} -p tcp -m tcp ${SYN_ONLY} -j REDIRECT --to-ports ${INBOUND_PLAINTEXT_PORT}`,
        ]],
      ]),
      jumps: new Map([['OUTPUT', NAT_OUTPUT], ['PREROUTING', NAT_PREROUTING]]),
    },
    {
      table: 'mangle',
      chains: new Map([
        [MANGLE_PREROUTING, [
          `-A ${MANGLE_PREROUTING} -m connmark --mark ${MARK} -j MARK --set-xmark ${MARK}`,
        ]],
        [MANGLE_OUTPUT, [
          `-A ${MANGLE_OUTPUT} -m mark --mark ${MARK} -j CONNMARK --save-mark --nfmask 0x${MESH_MARK_MASK.toString(16)} --ctmask 0x${MESH_MARK_MASK.toString(16)}`,
          `-A ${MANGLE_OUTPUT} -m connmark --mark ${MARK} -j MARK --set-xmark ${MARK}`,
        ]],
      ]),
      jumps: new Map([['OUTPUT', MANGLE_OUTPUT], ['PREROUTING', MANGLE_PREROUTING]]),
    },
  ];
}

/** iptables-restore --noflush input that makes the live table match the plan; empty when it already does. */
export function planTable(save: string, plan: TablePlan): string {
  const live = parseSavedTable(save, plan.table);
  const lines: string[] = [];
  const chainsMatch = [...plan.chains].every(([chain, rules]) => live.chains.includes(chain) && sameRules(live.rules.get(chain) ?? [], rules));
  const jumpEdits = [...plan.jumps].flatMap(([builtin, ours]) => firstJumpEdits(live.rules.get(builtin) ?? [], builtin, ours));
  if (chainsMatch && jumpEdits.length === 0) return '';
  lines.push(`*${plan.table}`);
  // Declaring a chain under --noflush flushes it (and only it): the result replaces exactly our chains.
  for (const chain of plan.chains.keys()) lines.push(`:${chain} - [0:0]`);
  for (const rules of plan.chains.values()) lines.push(...rules);
  lines.push(...jumpEdits, 'COMMIT', '');
  return lines.join('\n');
}


/** Applies and removes the rules inside pod namespaces; each call is one pod. */
export class InPodCapture {
  readonly #restore: CommandLine;
  readonly #save: CommandLine;
  readonly #ip: CommandLine;

  constructor(opts: InPodCommands = {}) {
    this.#restore = opts.iptablesRestore ?? 'iptables-restore';
    this.#save = opts.iptablesSave ?? 'iptables-save';
    this.#ip = opts.ip ?? 'ip';
  }

  /**
   * Makes the pod's rules what they should be; returns whether anything changed.
   * Two commands when nothing did (one `ip -batch`, one `iptables-save` of every
   * table), a third when something must be written: a node reads back each of
   * its pods' rules every 10 minutes (rules-check-rotation.ts).
   */
  async apply(netns: string, nodeAddresses: readonly string[]): Promise<boolean> {
    let changed = await this.#ensureReplyRoute(netns);
    const save = await iptablesSave(this.#save, undefined, netns);
    const input = inPodTables(nodeAddresses).map((plan) => planTable(save, plan)).join('');
    if (input) {
      trace('in-pod rules', { netns, input });
      await iptablesRestore(this.#restore, input, netns);
      changed = true;
    }
    return changed;
  }

  /** Removes every rule, chain and route of ours from the pod; returns whether there were any. */
  async remove(netns: string): Promise<boolean> {
    let removed = false;
    const save = await iptablesSave(this.#save, undefined, netns);
    const input = (['nat', 'mangle'] as const).map((table) => removalInput(save, table, 'NODEMESH-').input).join('');
    if (input) {
      await iptablesRestore(this.#restore, input, netns);
      removed = true;
    }
    const rules = await runCommand(this.#ip, ['-4', 'rule', 'show'], undefined, netns);
    if (rules.includes(`lookup ${REPLY_TABLE}`)) {
      await runCommand(this.#ip, ['-4', '-batch', '-'], [
        `rule del fwmark ${MARK} lookup ${REPLY_TABLE} priority ${REPLY_RULE_PRIORITY}`,
        `route flush table ${REPLY_TABLE}`,
        '',
      ].join('\n'), netns);
      removed = true;
    }
    return removed;
  }

  async #ensureReplyRoute(netns: string): Promise<boolean> {
    // `route replace` is idempotent, and cheaper than reading a table that may not exist yet; the
    // rules are listed in the same batch.
    const rules = await runCommand(this.#ip, ['-4', '-batch', '-'], `route replace local 0.0.0.0/0 dev lo table ${REPLY_TABLE}\nrule show\n`, netns);
    if (rules.includes(`lookup ${REPLY_TABLE}`)) return false;
    await runCommand(this.#ip, ['-4', 'rule', 'add', 'fwmark', MARK, 'lookup', String(REPLY_TABLE), 'priority', String(REPLY_RULE_PRIORITY)], undefined, netns);
    return true;
  }
}
