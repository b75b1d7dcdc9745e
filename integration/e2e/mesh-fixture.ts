// One meshed test cluster per end-to-end test file: network namespaces, the config
// dir the control plane reads, the real control plane and one `nodemesh node` per
// node. Setup failures tear down what was built and throw (tests fail, never
// skip); teardown removes processes, namespaces and the config dir.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, type Cluster } from '../cluster/cluster.ts';
import { generateConfigDir } from '../cluster/config-dir.ts';
import { startMesh, ADMIN_ADDR, DEFAULT_WORKERS, type Mesh, type MeshOptions } from '../cluster/mesh.ts';
import { runPrefix, sweepStale } from '../cluster/netns.ts';
import type { ClusterSpec, CniProfile } from '../cluster/plan.ts';
import { CNI_PROFILES } from '../cluster/plan.ts';
import { InvalidObjectError } from '../../core/errors.ts';
import { parseMetrics, type Sample } from './prometheus.ts';

/** Namespace prefix of every end-to-end L4 test cluster. */
export const E2E_PREFIX = 'nme';
/**
 * The CNI profile of the end-to-end suites' clusters (NODEMESH_E2E_CNI; `make
 * test` runs them on bridge, then on routed). A spec naming its own keeps it.
 */
export const E2E_CNI: CniProfile = parseCni(process.env.NODEMESH_E2E_CNI ?? 'bridge');

/** A test title naming the profile it runs on, and the workers when more than one: "[cni=routed workers=2] ...". */
export function cniTitle(title: string): string {
  return `[cni=${E2E_CNI}${DEFAULT_WORKERS > 1 ? ` workers=${DEFAULT_WORKERS}` : ''}] ${title}`;
}

function parseCni(value: string): CniProfile {
  if (!(CNI_PROFILES as readonly string[]).includes(value)) throw new InvalidObjectError('NODEMESH_E2E_CNI', 'value', `${JSON.stringify(value)} is not a CNI profile; profiles are ${CNI_PROFILES.join(', ')}`);
  return value as CniProfile;
}
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
export async function startMeshFixture(spec: ClusterSpec, tag: string, prefix = E2E_PREFIX, meshOptions: Omit<MeshOptions, 'configDir'> = {}): Promise<MeshFixture> {
  // Leftovers of runs that were killed outright (their pid is gone).
  await sweepStale(prefix);
  const configDir = await mkdtemp(join(tmpdir(), `nodemesh-e2e-${tag}-`));
  let cluster: Cluster | undefined;
  const teardown = async () => {
    await cluster?.teardown();
    await rm(configDir, { recursive: true, force: true });
  };
  try {
    cluster = await createCluster({ ...spec, cni: spec.cni ?? E2E_CNI }, { prefix: runPrefix(prefix, tag) });
    await generateConfigDir(cluster, configDir);
    const mesh = await startMesh(cluster, { ...meshOptions, configDir });
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
