// Running iptables-save / iptables-restore and reading their output. The command
// is configurable so the agent (or a test) can run it inside another network
// namespace, e.g. "ip netns exec node1 iptables-restore".

import { spawn } from 'node:child_process';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { inNetns } from '../daemon/netns.ts';

/** A command line: an argv array, or a string split on whitespace. */
export type CommandLine = string | readonly string[];

export class IptablesError extends NodemeshError {
  readonly command: string;
  readonly stderr: string;
  constructor(command: string, detail: string, stderr: string, options?: { cause?: unknown }) {
    super(
      ErrorCode.IPTABLES,
      `${command}: ${detail}${stderr ? `: ${stderr.trim()}` : ''}; check that the node agent runs with CAP_NET_ADMIN in the node's network namespace ` +
        'and that no other program holds the xtables lock (/run/xtables.lock) for long',
      options,
    );
    this.command = command;
    this.stderr = stderr;
  }
}

export function toArgv(command: CommandLine): string[] {
  const argv = typeof command === 'string' ? command.trim().split(/\s+/).filter(Boolean) : [...command];
  if (argv.length === 0) throw new NodemeshError(ErrorCode.IPTABLES, 'empty iptables command line: give a program such as "iptables-restore"');
  return argv;
}

/**
 * Runs a command with optional stdin, in the network namespace at `netns` when
 * given (the child is forked inside it); resolves to stdout, rejects with
 * IptablesError naming it and its stderr.
 */
export function runCommand(command: CommandLine, args: readonly string[], input?: string, netns?: string): Promise<string> {
  const argv = [...toArgv(command), ...args];
  const shown = netns ? `${argv.join(' ')} (in ${netns})` : argv.join(' ');
  return new Promise((resolve, reject) => {
    const start = () => spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const child = netns ? inNetns(netns, start) : start();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new IptablesError(shown, `cannot start (${e.message})`, '', { cause: e })));
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString();
      if (code === 0) resolve(Buffer.concat(out).toString());
      else reject(new IptablesError(shown, signal ? `killed by ${signal}` : `exited with status ${code}`, stderr));
    });
    // A failed child may close stdin before reading it all; its exit status reports the failure.
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** `iptables-save -t TABLE` (every table without one), in the network namespace at `netns` when given. */
export function iptablesSave(command: CommandLine, table: string | undefined, netns?: string): Promise<string> {
  return runCommand(command, table ? ['-t', table] : [], undefined, netns);
}

/** One `iptables-restore --noflush -w` transaction: all of `input` applies, or none of it. */
export async function iptablesRestore(command: CommandLine, input: string, netns?: string): Promise<void> {
  await runCommand(command, ['--noflush', '-w'], input, netns);
}

/** One table of iptables-save output: its chains in order and each chain's rules as printed ("-A CHAIN ..."). */
export interface SavedTable {
  chains: string[];
  rules: Map<string, string[]>;
}

export function parseSavedTable(save: string, table: string): SavedTable {
  const chains: string[] = [];
  const rules = new Map<string, string[]>();
  let inTable = false;
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      inTable = line === `*${table}`;
      continue;
    }
    if (!inTable) continue;
    if (line === 'COMMIT') {
      inTable = false;
    } else if (line.startsWith(':')) {
      const chain = line.slice(1).split(/\s+/)[0]!;
      chains.push(chain);
      if (!rules.has(chain)) rules.set(chain, []);
    } else if (line.startsWith('-A ')) {
      const chain = line.split(/\s+/)[1]!;
      const list = rules.get(chain) ?? [];
      list.push(line);
      rules.set(chain, list);
    }
  }
  return { chains, rules };
}

/** Whether two chains hold the same rules in the same order. */
export function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((rule, i) => rule === b[i]);
}

/** Edits of a builtin chain's `rules` that leave exactly one jump to `chain`, as its first rule. */
export function firstJumpEdits(rules: readonly string[], builtin: string, chain: string): string[] {
  const jump = `-A ${builtin} -j ${chain}`;
  const count = rules.filter((rule) => rule === jump).length;
  if (count === 1 && rules[0] === jump) return [];
  return [...Array.from({ length: count }, () => `-D ${builtin} -j ${chain}`), `-I ${builtin} 1 -j ${chain}`];
}

/**
 * iptables-restore input that removes every chain whose name starts with `prefix`
 * from one table of `save`, and every rule elsewhere that jumps or goes to one;
 * empty when there are none.
 */
export function removalInput(save: string, table: string, prefix: string): { input: string; chains: string[] } {
  const live = parseSavedTable(save, table);
  const ours = live.chains.filter((chain) => chain.startsWith(prefix));
  const references: string[] = [];
  for (const [chain, rules] of live.rules) {
    if (chain.startsWith(prefix)) continue;
    for (const rule of rules) if (rule.includes(` -j ${prefix}`) || rule.includes(` -g ${prefix}`)) references.push(`-D${rule.slice(2)}`);
  }
  if (ours.length === 0 && references.length === 0) return { input: '', chains: [] };
  const input = [
    `*${table}`,
    // Flush first: a chain can only be deleted once nothing jumps to it.
    ...ours.map((chain) => `:${chain} - [0:0]`),
    ...references,
    ...ours.map((chain) => `-X ${chain}`),
    'COMMIT',
    '',
  ].join('\n');
  return { input, chains: ours };
}
