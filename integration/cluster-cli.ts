// Explore the test cluster by hand (as root):
//   node integration/cluster-cli.ts up     --prefix demo [--spec spec.yaml] [--cni routed] [--config-dir DIR]
//   node integration/cluster-cli.ts status --prefix demo
//   node integration/cluster-cli.ts down   --prefix demo
// then e.g. `ip netns exec demo-n1-pod-default-client curl http://10.96.0.10/`.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import { createCluster } from './cluster/cluster.ts';
import { generateConfigDir } from './cluster/config-dir.ts';
import { belongsTo, deletePrefix, listNamespaces, run } from './cluster/netns.ts';
import type { ClusterSpec, CniProfile } from './cluster/plan.ts';

const USAGE = `usage: cluster-cli.ts up|down|status --prefix P [--spec FILE] [--cni PROFILE] [--config-dir DIR]

  up       build a cluster (default: 2 nodes, pods client and server-1 on n1,
           server-2 on n2, Service "server" port 80 -> 8080) and leave it running
  status   list the cluster's namespaces, addresses and processes
  down     delete every namespace of the prefix and what runs in them
  --spec        a ClusterSpec as YAML or JSON
  --cni         how pods are wired: bridge (default), routed, eni or bypass
  --config-dir  also write the control plane's YAML for the cluster there
`;

const DEFAULT_SPEC: ClusterSpec = {
  nodes: 2,
  pods: [
    { name: 'client', node: 'n1' },
    { name: 'server-1', node: 'n1', labels: { app: 'server' } },
    { name: 'server-2', node: 'n2', labels: { app: 'server' } },
  ],
  services: [{ name: 'server', selector: { app: 'server' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }],
};

async function status(prefix: string): Promise<void> {
  const namespaces = (await listNamespaces()).filter((ns) => belongsTo(ns, prefix)).sort();
  if (namespaces.length === 0) {
    console.log(`no namespaces with prefix ${prefix}`);
    return;
  }
  for (const ns of namespaces) {
    const addrs = (await run(['ip', '-n', ns, '-4', '-o', 'addr', 'show'])).split('\n').filter(Boolean).map((l) => {
      const f = l.split(/\s+/);
      return `${f[1]} ${f[3]}`;
    }).filter((a) => !a.startsWith('lo '));
    const pids = (await run(['ip', 'netns', 'pids', ns])).split(/\s+/).filter(Boolean);
    console.log(`${ns.padEnd(prefix.length + 28)} ${addrs.join(', ') || '-'}${pids.length ? `  pids ${pids.join(' ')}` : ''}`);
  }
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { prefix: { type: 'string' }, spec: { type: 'string' }, cni: { type: 'string' }, 'config-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  const [command] = positionals;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.prefix || !['up', 'down', 'status'].includes(command ?? '') || positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const prefix = values.prefix;
  switch (command) {
    case 'up': {
      const spec = values.spec ? (parse(readFileSync(values.spec, 'utf8')) as ClusterSpec) : DEFAULT_SPEC;
      const cluster = await createCluster(values.cni ? { ...spec, cni: values.cni as CniProfile } : spec, { prefix });
      cluster.keepAfterExit();
      if (values['config-dir']) await generateConfigDir(cluster, values['config-dir']);
      await status(prefix);
      for (const svc of cluster.services) console.log(`service ${svc.namespace}/${svc.name} ${svc.clusterIP} ports ${svc.ports.map((p) => `${p.port}->${p.targetPort}`).join(' ')}`);
      return 0;
    }
    case 'down': {
      const deleted = await deletePrefix(prefix);
      console.log(deleted.length ? `deleted ${deleted.join(' ')}` : `no namespaces with prefix ${prefix}`);
      return 0;
    }
    default:
      await status(prefix);
      return 0;
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`cluster-cli: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
