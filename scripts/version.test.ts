// One version: package.json's is the one `nodemesh version` prints (the bundle's
// is checked in build.test.ts), the image tag the manifests name, the tag
// `make image` builds, and the one docs/INSTALL.md tells operators to push.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { kustomize } from '../manifests/testdata/kustomize.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const run = promisify(execFile);
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

test('package.json, nodemesh version, the manifests\' image tags, make image and the install guide name one version', async () => {
  assert.match(version, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, 'package.json has a semantic version');

  assert.equal((await run(process.execPath, [fileURLToPath(new URL('../cli/nodemesh.ts', import.meta.url)), 'version'])).stdout, `nodemesh ${version}\n`);

  const images = kustomize(fileURLToPath(new URL('../manifests/', import.meta.url))).flatMap((o) =>
    [...(o.spec?.template?.spec?.initContainers ?? []), ...(o.spec?.template?.spec?.containers ?? [])].map((c: { image: string }) => `${o.kind}/${o.metadata.name}: ${c.image}`));
  assert.deepEqual(images, [`Deployment/nodemesh-controlplane: nodemesh:${version}`, `DaemonSet/nodemesh-node: nodemesh:${version}`]);

  const make = await run('make', ['--no-print-directory', '-n', 'image'], { cwd: ROOT });
  // podman or docker, whichever the machine has; build arguments and secrets before the tag.
  assert.match(make.stdout, new RegExp(`^(podman|docker) build (\\S+ )*-t nodemesh:${version.replaceAll('.', '\\.')} \\.$`, 'm'));

  const install = readFileSync(new URL('../docs/INSTALL.md', import.meta.url), 'utf8');
  const named = [...install.matchAll(/nodemesh:(\d[\w.-]*)|newTag: "([^"]+)"/g)].map((m) => m[1] ?? m[2]);
  assert.ok(named.length >= 3, `docs/INSTALL.md names the image's tag: ${named.join(', ')}`);
  assert.deepEqual([...new Set(named)], [version], 'every image tag in docs/INSTALL.md is package.json\'s version');
});
