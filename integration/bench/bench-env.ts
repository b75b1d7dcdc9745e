// Brings up everything the path benchmarks measure, in one cluster: the mesh, an
// origin (nginx + iperf3) in each server pod, the nginx mTLS tunnels (`stream`
// and `http`) with their REDIRECTs, and the CPU pinning (load generators on one
// CPU, everything on the nodes on the other). The mesh can be started again with
// other node flags and CPUs (the workers row). Teardown of the cluster removes
// all of it.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from '../cluster/cluster.ts';
import { createCluster } from '../cluster/cluster.ts';
import { generateConfigDir } from '../cluster/config-dir.ts';
import type { Mesh, MeshOptions } from '../cluster/mesh.ts';
import { startMesh } from '../cluster/mesh.ts';
import type { ClusterProcess } from '../cluster/processes.ts';
import { logger } from '../../core/log.ts';
import { benchClusterSpec, HTTP_PORT, IPERF_PORT } from './bench-topology.ts';
import { l7ClientConf, l7ServerConf, makeTunnelCerts, originConf, SERVER_NAME, TUNNEL_PORTS, tunnelClientConf, tunnelServerConf } from './nginx-conf.ts';
import type { TunnelCerts } from './nginx-conf.ts';
import { pin, processTree } from './proc-stats.ts';

const log = logger('bench');

/** CPU of the load generators, and CPU of everything that runs on the nodes. */
export const LOAD_CPU = '0';
export const NODE_CPU = '1';
/** Both CPUs: where the workers row lets the nodemesh node processes run. */
export const ALL_CPUS = `${LOAD_CPU},${NODE_CPU}`;

/** How the nodemesh node processes are started: extra `nodemesh node` flags, and the CPUs they may use. */
export interface NodeLaunch {
  nodeArgs: string[];
  cpus: string;
}

/** Every path's launch: no extra flags, on the node CPU. */
export const PINNED_NODES: NodeLaunch = { nodeArgs: [], cpus: NODE_CPU };

type NginxChain = { client: ClusterProcess; server: ClusterProcess };

export interface BenchEnv {
  cluster: Cluster;
  mesh: Mesh;
  workDir: string;
  /** The nginx `stream` tunnel's master process on each node (workers are its children). */
  tunnel: NginxChain;
  /** The nginx `http` chain's master process on each node. */
  l7: NginxChain;
  /** nodemesh node processes by node name. */
  nodePids(): number[];
  /** nginx `stream` tunnel processes (master and worker) of each node. */
  tunnelPidsByNode(): number[][];
  /** nginx `http` chain processes (master and worker) of each node. */
  l7PidsByNode(): number[][];
  /** Stops the mesh and starts it anew (new CA, new certificates) with these node flags and CPUs; `mesh` is the new one. */
  restartMesh(launch: NodeLaunch): Promise<void>;
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

/** The control plane on the node CPU; the node processes (all their threads) on `launch.cpus`. */
async function startPinnedMesh(cluster: Cluster, opts: MeshOptions, launch: NodeLaunch): Promise<Mesh> {
  // A profiled node writes its profile when it exits: a short drain lets it exit within the stop's grace.
  const profiling = opts.env?.NODE_OPTIONS?.includes('--cpu-prof') ? ['--drain-deadline-ms', '400'] : [];
  const mesh = await startMesh(cluster, { ...opts, nodeArgs: [...launch.nodeArgs, ...profiling] });
  pin(mesh.controlPlane!.pid, NODE_CPU);
  for (const node of mesh.nodes.values()) pin(node.pid, launch.cpus);
  return mesh;
}

async function startChain(cluster: Cluster, workDir: string, name: string, confs: { client: string; server: string }): Promise<NginxChain> {
  const files = { client: join(workDir, `${name}-client.conf`), server: join(workDir, `${name}-server.conf`) };
  await writeFile(files.client, confs.client);
  await writeFile(files.server, confs.server);
  return {
    client: await startNginx(cluster, cluster.node('n1').netns, files.client),
    server: await startNginx(cluster, cluster.node('n2').netns, files.server),
  };
}

/**
 * The L7 reference is mutual TLS: from n1, its server node's port answers a
 * request that carries the client certificate (200) and refuses one without (400).
 */
async function checkL7Mtls(cluster: Cluster, certs: TunnelCerts): Promise<void> {
  const url = `https://${SERVER_NAME}:${TUNNEL_PORTS.l7Tls}/`;
  const status = async (withCert: boolean) => (await cluster.exec(cluster.node('n1').netns, [
    'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '--tlsv1.3', '--cacert', certs.ca,
    '--resolve', `${SERVER_NAME}:${TUNNEL_PORTS.l7Tls}:${cluster.node('n2').ip}`,
    ...(withCert ? ['--cert', certs.clientCert, '--key', certs.clientKey] : []), url,
  ], { allowFailure: true })).stdout.trim();
  const [withCert, without] = [await status(true), await status(false)];
  if (withCert !== '200' || without !== '400') throw new Error(`nginx-l7-mtls server node: ${withCert} with the client certificate (want 200), ${without} without (want 400)`);
}

/** `nodeEnv` is extra environment for the nodemesh processes (e.g. NODE_OPTIONS=--cpu-prof). */
export async function startBenchEnv(prefix: string, nodeEnv: Record<string, string> = {}): Promise<BenchEnv> {
  const cluster = await createCluster(benchClusterSpec(), { prefix });
  const workDir = await mkdtemp(join(tmpdir(), `${prefix}-bench-`));
  cluster.onTeardown(() => rm(workDir, { recursive: true, force: true }));
  try {
    const configDir = join(workDir, 'config');
    await generateConfigDir(cluster, configDir);
    const meshOptions: MeshOptions = { configDir, env: { NODEMESH_LOG_LEVEL: 'warn', ...nodeEnv } };
    let mesh = await startPinnedMesh(cluster, meshOptions, PINNED_NODES);

    for (const name of ['server-plain', 'server-mesh', 'server-local']) {
      const pod = cluster.pod(name);
      const conf = join(workDir, `origin-${name}.conf`);
      await writeFile(conf, originConf(workDir, `origin-${name}`, HTTP_PORT));
      await startNginx(cluster, pod.netns, conf);
      const iperf = cluster.spawn(pod.netns, onNodeCpu(['iperf3', '-s', '--forceflush', '-p', String(IPERF_PORT)]));
      await iperf.waitForOutput('Server listening');
    }

    const certs = makeTunnelCerts(workDir);
    const serverNodeIp = cluster.node('n2').ip;
    const originIp = cluster.pod('server-plain').ip;
    const tunnel = await startChain(cluster, workDir, 'tunnel', {
      client: tunnelClientConf(workDir, certs, serverNodeIp),
      server: tunnelServerConf(workDir, certs, originIp, HTTP_PORT, IPERF_PORT),
    });
    const l7 = await startChain(cluster, workDir, 'l7', {
      client: l7ClientConf(workDir, certs, serverNodeIp),
      server: l7ServerConf(workDir, certs, originIp, HTTP_PORT),
    });
    await checkL7Mtls(cluster, certs);
    // The nginx client pods' traffic is redirected into their chain as nodemesh's is:
    // from the top of PREROUTING, before kube-proxy's DNAT.
    const clientIp = cluster.pod('client-nginx').ip;
    const l7ClientIp = cluster.pod('client-nginx-l7').ip;
    await cluster.exec(cluster.node('n1').netns, ['iptables-restore', '--noflush', '-w'], {
      input: [
        '*nat',
        ':NMB-NGINX-TUNNEL - [0:0]',
        `-A NMB-NGINX-TUNNEL -s ${clientIp}/32 -p tcp --dport ${HTTP_PORT} -j REDIRECT --to-ports ${TUNNEL_PORTS.httpIn}`,
        `-A NMB-NGINX-TUNNEL -s ${clientIp}/32 -p tcp --dport ${IPERF_PORT} -j REDIRECT --to-ports ${TUNNEL_PORTS.iperfIn}`,
        `-A NMB-NGINX-TUNNEL -s ${l7ClientIp}/32 -p tcp --dport ${HTTP_PORT} -j REDIRECT --to-ports ${TUNNEL_PORTS.l7In}`,
        '-I PREROUTING 1 -j NMB-NGINX-TUNNEL',
        'COMMIT',
        '',
      ].join('\n'),
    });
    log.info('bench environment up', { prefix, workDir });
    const pidsByNode = (chain: NginxChain) => [processTree(chain.client.pid), processTree(chain.server.pid)];
    const env: BenchEnv = {
      cluster, mesh, workDir, tunnel, l7,
      nodePids: () => [...mesh.nodes.values()].map((p) => p.pid),
      tunnelPidsByNode: () => pidsByNode(tunnel),
      l7PidsByNode: () => pidsByNode(l7),
      restartMesh: async (launch) => {
        await mesh.stop();
        mesh = await startPinnedMesh(cluster, meshOptions, launch);
        env.mesh = mesh;
        log.info('mesh restarted', { nodeArgs: launch.nodeArgs, cpus: launch.cpus });
      },
      teardown: () => cluster.teardown(),
    };
    return env;
  } catch (err) {
    await cluster.teardown();
    throw err;
  }
}
