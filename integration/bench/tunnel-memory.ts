// The memory target's setting: the node daemons' resident memory while 1,000
// connections are held open through the mesh (HBONE tunnels), with the
// benchmark's 100+ enrolled pods.

import { fileURLToPath } from 'node:url';
import type { BenchEnv } from './bench-env.ts';
import { LOAD_CPU } from './bench-env.ts';
import { HTTP_PORT, PATH_ROUTES } from './bench-topology.ts';
import { peakRssMib, rssMib, rssSplitMib } from './proc-stats.ts';

const HOLDER = fileURLToPath(new URL('./hold-connections.ts', import.meta.url));
export const HELD_CONNECTIONS = 1000;

export interface TunnelMemory {
  connections: number;
  enrolled_pods: number;
  /** Per node: resident memory before and with the connections open, and the process's peak over the whole run. */
  nodes: Record<string, { idle_rss_mib: number; rss_mib: number; peak_rss_mib: number; anon_mib: number; file_mib: number }>;
  command: string[];
}

export async function measureTunnelMemory(env: BenchEnv, enrolledPods: number): Promise<TunnelMemory> {
  const { client, service } = PATH_ROUTES['nodemesh-l4'];
  const vip = env.cluster.service(service).clusterIP;
  const command = ['taskset', '-c', LOAD_CPU, process.execPath, HOLDER, vip, String(HTTP_PORT), String(HELD_CONNECTIONS)];
  const idle = new Map([...env.mesh.nodes].map(([name, proc]) => [name, rssMib(proc.pid)]));
  const holder = env.cluster.spawn(env.cluster.pod(client).netns, command);
  try {
    await holder.waitForOutput(`held ${HELD_CONNECTIONS}`, 60_000);
    // Let the daemons settle (timers, GC) before reading.
    await new Promise((r) => setTimeout(r, 2000));
    const nodes: TunnelMemory['nodes'] = {};
    for (const [name, proc] of env.mesh.nodes) {
      const split = rssSplitMib(proc.pid);
      nodes[name] = { idle_rss_mib: idle.get(name)!, rss_mib: rssMib(proc.pid), peak_rss_mib: peakRssMib(proc.pid), anon_mib: split.anon, file_mib: split.file };
    }
    return { connections: HELD_CONNECTIONS, enrolled_pods: enrolledPods, nodes, command };
  } finally {
    holder.child.stdin!.end();
    await holder.stop();
  }
}
