// Brings up everything the path benchmarks measure, in one cluster: the mesh, an
// origin (nginx + iperf3) in each server pod, the nginx mTLS tunnel with its
// REDIRECT, and the CPU pinning (load generators on one CPU, everything on the
// nodes on the other). Teardown of the cluster removes all of it.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from '../cluster/cluster.ts';
import { createCluster } from '../cluster/cluster.ts';
import { generateConfigDir } from '../cluster/config-dir.ts';
import type { Mesh } from '../cluster/mesh.ts';
import { startMesh } from '../cluster/mesh.ts';
import type { ClusterProcess } from '../cluster/processes.ts';
import { logger } from '../../core/log.ts';
import { benchClusterSpec, HTTP_PORT, IPERF_PORT } from './bench-topology.ts';
import { makeTunnelCerts, originConf, TUNNEL_PORTS, tunnelClientConf, tunnelServerConf } from './nginx-conf.ts';
import { pin, processTree } from './proc-stats.ts';

const log = logger('bench');

/** CPU of the load generators, and CPU of everything that runs on the nodes. */
export const LOAD_CPU = '0';
export const NODE_CPU = '1';

export interface BenchEnv {
  cluster: Cluster;
  mesh: Mesh;
  workDir: string;
  /** The nginx tunnel's master process on each node (pid; workers are its children). */
  tunnel: { client: ClusterProcess; server: ClusterProcess };
  /** nodemesh node processes by node name. */
  nodePids(): number[];
  /** nginx tunnel processes (master and worker) of each node. */
  tunnelPidsByNode(): number[][];
  teardown(): Promise<void>;
}

function onNodeCpu(argv: string[]): string[] {
  return ['taskset', '-c', NODE_CPU, ...argv];
}

async function startNginx(cluster: Cluster, netns: string, confFile: string): Promise<ClusterProcess> {
  const proc = cluster.spawn(netns, onNodeCpu(['nginx', '-c', confFile, '-g', 'daemon off;']));
  // nginx prints nothing when it starts well; give it a moment, then check it is still there.
  await new Promise((r) => setTimeout(r, 300));
  if (proc.exitStatus) throw new Error(`nginx ${confFile} exited (${proc.exitStatus.code}): ${proc.stderr}`);
  return proc;
}

/** `nodeEnv` is extra environment for the nodemesh processes (e.g. NODE_OPTIONS=--cpu-prof). */
export async function startBenchEnv(prefix: string, nodeEnv: Record<string, string> = {}): Promise<BenchEnv> {
  const cluster = await createCluster(benchClusterSpec(), { prefix });
  const workDir = await mkdtemp(join(tmpdir(), `${prefix}-bench-`));
  cluster.onTeardown(() => rm(workDir, { recursive: true, force: true }));
  try {
    const configDir = join(workDir, 'config');
    await generateConfigDir(cluster, configDir);
    const mesh = await startMesh(cluster, { configDir, env: { NODEMESH_LOG_LEVEL: 'warn', ...nodeEnv } });
    pin(mesh.controlPlane!.pid, NODE_CPU);
    for (const node of mesh.nodes.values()) pin(node.pid, NODE_CPU);

    for (const name of ['server-plain', 'server-mesh']) {
      const pod = cluster.pod(name);
      const conf = join(workDir, `origin-${name}.conf`);
      await writeFile(conf, originConf(workDir, `origin-${name}`, HTTP_PORT));
      await startNginx(cluster, pod.netns, conf);
      const iperf = cluster.spawn(pod.netns, onNodeCpu(['iperf3', '-s', '--forceflush', '-p', String(IPERF_PORT)]));
      await iperf.waitForOutput('Server listening');
    }

    const certs = makeTunnelCerts(workDir);
    const clientConf = join(workDir, 'tunnel-client.conf');
    const serverConf = join(workDir, 'tunnel-server.conf');
    await writeFile(clientConf, tunnelClientConf(workDir, certs, cluster.node('n2').ip));
    await writeFile(serverConf, tunnelServerConf(workDir, certs, cluster.pod('server-plain').ip, HTTP_PORT, IPERF_PORT));
    const tunnel = {
      client: await startNginx(cluster, cluster.node('n1').netns, clientConf),
      server: await startNginx(cluster, cluster.node('n2').netns, serverConf),
    };
    // The nginx client pod's traffic is redirected into the tunnel as nodemesh's is:
    // from the top of PREROUTING, before kube-proxy's DNAT.
    const clientIp = cluster.pod('client-nginx').ip;
    await cluster.exec(cluster.node('n1').netns, ['iptables-restore', '--noflush', '-w'], {
      input: [
        '*nat',
        ':NMB-NGINX-TUNNEL - [0:0]',
        `-A NMB-NGINX-TUNNEL -s ${clientIp}/32 -p tcp --dport ${HTTP_PORT} -j REDIRECT --to-ports ${TUNNEL_PORTS.httpIn}`,
        `-A NMB-NGINX-TUNNEL -s ${clientIp}/32 -p tcp --dport ${IPERF_PORT} -j REDIRECT --to-ports ${TUNNEL_PORTS.iperfIn}`,
        '-I PREROUTING 1 -j NMB-NGINX-TUNNEL',
        'COMMIT',
        '',
      ].join('\n'),
    });
    log.info('bench environment up', { prefix, workDir });
    return {
      cluster, mesh, workDir, tunnel,
      nodePids: () => [...mesh.nodes.values()].map((p) => p.pid),
      tunnelPidsByNode: () => [processTree(tunnel.client.pid), processTree(tunnel.server.pid)],
      teardown: () => cluster.teardown(),
    };
  } catch (err) {
    await cluster.teardown();
    throw err;
  }
}
