// Which container engine builds the image: $ENGINE when set, else podman when it
// is installed (daemonless, so installed means usable, as root or not), else
// docker. The Makefile's `make image` decides the same way.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function onPath(program: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${program}`]).then(() => true, () => false);
}

export async function containerEngine(): Promise<string> {
  if (process.env.ENGINE) return process.env.ENGINE;
  if (await onPath('podman')) return 'podman';
  if (await onPath('docker')) return 'docker';
  throw new Error('no container engine: install podman (make system-deps does) or docker, or name one in ENGINE');
}
