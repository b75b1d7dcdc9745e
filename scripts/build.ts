// Builds what ships: the nodemesh executable as plain JavaScript in dist/.
//
// Node runs our TypeScript sources directly in development, but type stripping
// loads a WASM compiler into every process (about 17 MiB resident) and every
// dependency as hundreds of separate modules. The node agent runs on every node
// of the cluster, so the image runs this bundle instead: one entry file plus
// chunks, split at the subcommands' dynamic imports so a node never loads the
// control plane's Kubernetes client. koffi stays external: it loads a native
// addon for the platform at run time.
//
//   node scripts/build.ts        # writes dist/nodemesh.mjs, dist/data-plane-worker.mjs and their chunks
//
// dist/ sits one level below the repository root like the source folders, so the
// files found relative to a module (proto/, package.json) resolve the same way.

import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
export const DIST_DIR = join(ROOT, 'dist');
export const DIST_CLI = join(DIST_DIR, 'nodemesh.mjs');

// Bundled CommonJS dependencies call require() for Node's built-ins; an ES
// module has none unless we make one.
const REQUIRE_SHIM = "import { createRequire as __nodemeshCreateRequire } from 'node:module';\n"
  + 'const require = __nodemeshCreateRequire(import.meta.url);';

/**
 * Bundles cli/nodemesh.ts into dist/. Safe to run from several processes at
 * once: chunks are named by content hash and every file is written under a
 * temporary name and renamed into place, so a reader never sees half a file.
 */
export async function buildDist(): Promise<string> {
  const result = await build({
    // The data-plane worker threads load their own entry (daemon/workers.ts finds it beside the chunks).
    entryPoints: { nodemesh: join(ROOT, 'cli/nodemesh.ts'), 'data-plane-worker': join(ROOT, 'daemon/data-plane-worker.ts') },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    outdir: DIST_DIR,
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunk-[hash]',
    entryNames: '[name]',
    external: ['koffi'],
    banner: { js: REQUIRE_SHIM },
    // Not minified: stack traces in an operator's logs stay readable, and
    // minifying saved under 1 MiB of resident memory. No keepNames: it wraps
    // every function expression in a call that redefines its `name`, which
    // turned each per-connection closure into a dictionary-mode object (6 per
    // tunnel, 1.5 MiB per 1,000 tunnels) and cost 2% of the L7 CPU profile.
    // What reads a class's name (error names, core/errors.ts) is checked in
    // build.test.ts: the bundler renames only on a clash, or a class that
    // refers to itself (`var X = class _X`).
    keepNames: false,
    legalComments: 'none',
    logLevel: 'warning',
    write: false,
  });
  await mkdir(DIST_DIR, { recursive: true });
  const written = new Set<string>();
  for (const file of result.outputFiles) {
    const temporary = join(dirname(file.path), `.${basename(file.path)}.${process.pid}.tmp`);
    await writeFile(temporary, file.contents);
    await rename(temporary, file.path);
    written.add(basename(file.path));
  }
  // Chunks of earlier builds are no longer referenced by the entry file.
  for (const name of await readdir(DIST_DIR)) {
    if (name.startsWith('chunk-') && !written.has(name)) await rm(join(DIST_DIR, name), { force: true });
  }
  return DIST_CLI;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`built ${await buildDist()}\n`);
}
