// One meshed test cluster per end-to-end test file: network namespaces, the config
// dir the control plane reads, the real control plane and one `nodemesh node` per
// node. Setup failures tear down what was built and throw (tests fail, never
// skip); teardown removes processes, namespaces and the config dir.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, type Cluster } from '../cluster/cluster.ts';
import { generateConfigDir } from '../cluster/config-dir.ts';
import { startMesh, ADMIN_ADDR, type Mesh } from '../cluster/mesh.ts';
import { runPrefix, sweepStale } from '../cluster/netns.ts';
import type { ClusterSpec } from '../cluster/plan.ts';
import { parseMetrics, type Sample } from './prometheus.ts';

/** Namespace prefix of every end-to-end L4 test cluster. */
export const E2E_PREFIX = 'nme';
const METRICS_URL = 'http://127.0.0.1:15020/metrics';

export interface MeshFixture {
  cluster: Cluster;
  mesh: Mesh;
  /** The YAML the control plane watches; edit it with writeObject. */
  configDir: string;
  teardown(): Promise<void>;
}

/**
 * `tag` (lower-case letters) tells the clusters of different test files apart;
 * `prefix` the namespaces of different groups of tests.
 */
export async function startMeshFixture(spec: ClusterSpec, tag: string, prefix = E2E_PREFIX): Promise<MeshFixture> {
  // Leftovers of runs that were killed outright (their pid is gone).
  await sweepStale(prefix);
  const configDir = await mkdtemp(join(tmpdir(), `nodemesh-e2e-${tag}-`));
  let cluster: Cluster | undefined;
  const teardown = async () => {
    await cluster?.teardown();
    await rm(configDir, { recursive: true, force: true });
  };
  try {
    cluster = await createCluster(spec, { prefix: runPrefix(prefix, tag) });
    await generateConfigDir(cluster, configDir);
    const mesh = await startMesh(cluster, { configDir });
    return { cluster, mesh, configDir, teardown };
  } catch (err) {
    await teardown();
    throw err;
  }
}

/** GET on a node's own loopback (admin API, metrics), from inside the node's namespace. */
export async function nodeGet(cluster: Cluster, node: string, url: string): Promise<string> {
  const res = await cluster.exec(cluster.node(node).netns, ['curl', '-sS', '--fail', '--max-time', '5', url]);
  return res.stdout;
}

/** A JSON endpoint of a node's admin API, e.g. "/policies". */
export async function adminGet<T>(cluster: Cluster, node: string, path: string): Promise<T> {
  return JSON.parse(await nodeGet(cluster, node, `http://${ADMIN_ADDR}${path}`)) as T;
}

/** What a node serves on :15020/metrics. */
export async function scrapeMetrics(cluster: Cluster, node: string): Promise<Sample[]> {
  return parseMetrics(await nodeGet(cluster, node, METRICS_URL));
}
