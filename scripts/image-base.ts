// A base image for the Dockerfile's `BASE` build argument, made from Debian
// packages where node:24-slim cannot be pulled (a machine that reaches only the
// npm registry and a Debian mirror): mmdebstrap builds a minimal bookworm root
// with what the image runs (iptables, iproute2, ca-certificates, Node's own
// libraries), the Node 24 that runs this script and npm go where node:24-slim has them
// (/usr/local/bin, /usr/local/lib/node_modules/npm), so every stage of the
// Dockerfile runs unchanged on it, and the root is imported into the engine.
//
// Building it costs a minute or two; it is tagged with a hash of its recipe (the
// suite, the packages, the Node and npm versions), so it is built once and
// reused until one of those changes.
//
//   node scripts/image-base.ts          # prints the tag, e.g. nodemesh-base:3f2a…
//   make image BASE=$(node scripts/image-base.ts)

import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { containerEngine } from './container-engine.ts';

const run = promisify(execFile);

/** Everything the base is made of; its hash is the tag. */
export const BASE_RECIPE = {
  suite: 'bookworm',
  // iptables-save/-restore program capture; ip (iproute2) the policy routing of
  // deliveries, also inside pods' namespaces; libstdc++6 is what Node links
  // beyond libc; ca-certificates for npm ci in the build stages.
  packages: ['iptables', 'iproute2', 'ca-certificates', 'libstdc++6'],
  npm: '11',
} as const;

// The Node that runs this script (make's, from .tools/ unless the machine has 24):
// the official build, which links nothing beyond libc, libstdc++ and libgcc.
function nodeVersion(): string {
  return process.versions.node;
}

/** The tag of the base this checkout would build: nodemesh-base:<12 hex digits>. */
export async function baseTag(): Promise<string> {
  const recipe = JSON.stringify({ ...BASE_RECIPE, node: nodeVersion() });
  return `nodemesh-base:${createHash('sha256').update(recipe).digest('hex').slice(0, 12)}`;
}

async function exists(engine: string, tag: string): Promise<boolean> {
  return run(engine, ['image', 'exists', tag]).then(() => true, () => false);
}

/** mmdebstrap's root as a tarball, then imported: a failed build never leaves an image behind. */
async function buildRoot(engine: string, tag: string, work: string, npmDir: string, node: string): Promise<void> {
  const tarball = join(work, 'root.tar');
  await new Promise<void>((resolve, reject) => {
    const mmdebstrap = spawn('mmdebstrap', [
      '--variant=essential',
      `--include=${BASE_RECIPE.packages.join(',')}`,
      '--aptopt=APT::Install-Recommends "false"',
      // merged /usr the way debootstrap makes it, without the usrmerge package and the Perl it pulls in.
      '--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr',
      ...['man', 'doc', 'locale', 'info'].map((d) => `--dpkgopt=path-exclude=/usr/share/${d}/*`),
      '--dpkgopt=path-include=/usr/share/doc/*/copyright',
      `--customize-hook=copy-in ${node} /usr/local/bin`,
      '--customize-hook=mkdir -p "$1/usr/local/lib/node_modules/npm"',
      `--customize-hook=sync-in ${npmDir} /usr/local/lib/node_modules/npm`,
      '--customize-hook=ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"',
      '--customize-hook=ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"',
      BASE_RECIPE.suite, tarball,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    mmdebstrap.stderr.on('data', (b: Buffer) => { log = (log + b.toString()).slice(-4000); });
    mmdebstrap.on('error', reject);
    mmdebstrap.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`mmdebstrap could not build the root of ${tag} (exit ${code}):\n${log}`))));
  });
  await run(engine, ['import', '--change', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--change', 'CMD ["node"]', tarball, tag]);
}

/** The base's tag, built first when the engine does not have it yet. */
export async function ensureBase(log: (line: string) => void = () => {}): Promise<string> {
  const engine = await containerEngine();
  const tag = await baseTag();
  if (await exists(engine, tag)) return tag;
  const started = Date.now();
  log(`building ${tag} from Debian ${BASE_RECIPE.suite} packages (${BASE_RECIPE.packages.join(', ')}), Node ${nodeVersion()}, npm ${BASE_RECIPE.npm}`);
  const work = await mkdtemp(join(tmpdir(), 'nodemesh-base-'));
  try {
    // npm's own package carries its dependencies; unpacked it is what node:24-slim has.
    const packed = (await run('npm', ['pack', '--silent', `npm@${BASE_RECIPE.npm}`, '--pack-destination', work], { cwd: work })).stdout.trim().split('\n').at(-1)!;
    await run('tar', ['-xzf', join(work, packed), '-C', work]);
    await buildRoot(engine, tag, work, join(work, 'package'), process.execPath);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  log(`built ${tag} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  // Bases of earlier recipes are no longer what this checkout builds on.
  const older = (await run(engine, ['images', '--format', '{{.Repository}}:{{.Tag}}'])).stdout.split('\n').filter((t) => /(^|\/)nodemesh-base:/.test(t) && !t.endsWith(tag.slice(tag.indexOf(':'))));
  for (const old of older) await run(engine, ['rmi', old]).catch(() => {});
  return tag;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${await ensureBase((line) => process.stderr.write(`${line}\n`))}\n`);
}
