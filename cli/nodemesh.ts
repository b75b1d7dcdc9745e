#!/usr/bin/env node
// The one nodemesh executable. Each subcommand's module is loaded only when it
// runs: a node agent never loads the control plane's Kubernetes client, and the
// demo (integration/) may be absent from a build.

import { readFileSync } from 'node:fs';
import { NodemeshError } from '../core/errors.ts';
import { UsageError } from './args.ts';

const USAGE = `usage: nodemesh <command> [flags]

commands:
  controlplane   run the control plane: config source, CA, control API
  node           run the node agent and data plane (one per node)
  demo           run a two-node cluster in network namespaces with meshed traffic (root)

operator commands (ask one node with --admin HOST:PORT, or nodes through the Kubernetes API):
  status         every node: ready, config version, control plane connected, certificate expiry
  workloads      enrolled workloads: identity, capture, mTLS mode, certificate
  certs          workload certificates and the trust bundle
  connections    open connections with both identities
  policies       authorization policies
  routes         HTTP and gRPC routes
  explain        what the data plane would do with a connection, and the policy that decides
  tap            live connection opens and closes, refusals and requests
  logging        log level and debug tracers (and change them)

  version        print the version
  help           show this help

Run "nodemesh <command> --help" for the flags of a command.
`;

/** A command may return its exit status (the demo's --once reports failed steps with 1). */
type Command = (argv: string[]) => Promise<void | number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  controlplane: async () => (await import('./controlplane.ts')).runControlPlaneCommand,
  node: async () => (await import('./node.ts')).runNodeCommand,
  demo: async () => (await import('./demo.ts')).runDemoCommand,
  ...Object.fromEntries(['status', 'workloads', 'certs', 'connections', 'policies', 'routes', 'explain', 'tap', 'logging'].map((name) => [
    name, async () => {
      const { runInspectCommand } = await import('./inspect.ts');
      return (argv: string[]) => runInspectCommand(name, argv);
    },
  ])),
  version: async () => async () => {
    process.stdout.write(`nodemesh ${version()}\n`);
  },
  help: async () => async () => {
    process.stdout.write(USAGE);
  },
};

function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(`nodemesh: no command given\n\n${USAGE}`);
    return 2;
  }
  if (name === '--help' || name === '-h') {
    process.stdout.write(USAGE);
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  try {
    if (!load) throw new UsageError(`nodemesh: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return (await (await load())(rest)) ?? 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof NodemeshError) {
      process.stderr.write(`nodemesh ${name}: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`nodemesh ${name}: ${String((err as Error)?.stack ?? err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
