// `nodemesh demo [--once | --cleanup]`: flags and exit status of the two-node
// demo, and the wait for Ctrl-C while it stays up for exploring. The demo itself
// (integration/demo.ts) is optional in a build (the image has no integration/),
// so it is loaded through a computed specifier that neither the type checker
// nor the bundler follows, and its absence is an error that says so.

import { relative } from 'node:path';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import { parseFlags, usageOf, UsageError } from './args.ts';

const FLAGS = {
  once: { type: 'boolean', description: 'print the report, tear down and exit: 0 only if every step behaved as expected' },
  prefix: { type: 'string', default: 'nmdemo', description: 'start of the network namespace names (the process id is appended)' },
  cni: { type: 'string', default: 'routed', description: 'how the cluster wires pods on the host side: routed (Calico-like), bridge (flannel-like), eni (AWS VPC CNI-like) or bypass (eBPF-datapath-like)' },
  cleanup: { type: 'boolean', description: 'remove what runs that are gone left behind (namespaces, their processes, work directories), then exit' },
} as const;
const SUMMARY = 'Runs a two-node cluster in network namespaces (root) from examples/demo with the real control plane and nodes, shows meshed traffic, certificates, a policy denial and metrics.';

/** What integration/demo.ts exports; its DemoOptions has the same shape, and the demo test runs both together. */
interface DemoModule {
  runDemo(opts: { once: boolean; prefix: string; cni: string; untilDone(): Promise<void>; cleanupCommand: string }): Promise<boolean>;
  cleanupDemo(base: string): Promise<string[]>;
}

/** `nodemesh demo ...`: with --once 0 if every step behaved as expected, else 1; 130 after Ctrl-C; --cleanup 0. */
export async function runDemoCommand(argv: string[]): Promise<number> {
  const flags = parseFlags('demo', SUMMARY, argv, FLAGS);
  if (flags.help) {
    process.stdout.write(usageOf('demo', SUMMARY, FLAGS));
    return 0;
  }
  // The demo appends the pid: digits in the base would make stale runs unrecognisable.
  if (!/^[a-z]+$/.test(flags.prefix)) throw new UsageError(`nodemesh demo: --prefix ${JSON.stringify(flags.prefix)}: use lower-case letters only`);
  const { runDemo, cleanupDemo } = await loadDemo();
  if (flags.cleanup) {
    const removed = await cleanupDemo(flags.prefix);
    process.stdout.write(removed.length === 0
      ? `nothing to clean up: no ${flags.prefix}<pid>-* namespace or work directory of a run that is gone\n`
      : removed.map((what) => `removed ${what}\n`).join(''));
    return 0;
  }
  // As this process was started, so that it can be pasted: `node cli/nodemesh.ts …` or the bundle.
  const self = `node ${relative(process.cwd(), process.argv[1] ?? '') || process.argv[1]}`;
  const cleanupCommand = `${self} demo --cleanup${flags.prefix === FLAGS.prefix.default ? '' : ` --prefix ${flags.prefix}`}`;
  const ok = await runDemo({ once: flags.once, prefix: flags.prefix, cni: flags.cni, untilDone: untilInterrupted, cleanupCommand });
  if (flags.once) return ok ? 0 : 1;
  return 130;
}

async function loadDemo(): Promise<DemoModule> {
  const specifier = new URL('../integration/demo.ts', import.meta.url).href;
  try {
    return (await import(specifier)) as DemoModule;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes('demo.ts')) {
      throw new NodemeshError(ErrorCode.NO_DEMO, 'this build has no demo (integration/demo.ts is missing)');
    }
    throw err;
  }
}

function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
