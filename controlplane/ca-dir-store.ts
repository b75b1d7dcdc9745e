// `--ca-dir`: the CA root as ca-key.pem (mode 0600) and ca-cert.pem. The key file
// is created exclusively (link), so of two control planes starting together one
// root wins and both use it.

import { mkdir, readFile, writeFile, link, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, NodemeshError } from '../core/errors.ts';
import type { CaKeyPair, CaStore } from './ca.ts';

const KEY_FILE = 'ca-key.pem';
const CERT_FILE = 'ca-cert.pem';
// How long a loser of the creation race waits for the winner's certificate file.
const PEER_WRITE_WAIT_MS = 5000;

export class DirCaStore implements CaStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  get keyPath(): string {
    return join(this.dir, KEY_FILE);
  }

  get certPath(): string {
    return join(this.dir, CERT_FILE);
  }

  async load(): Promise<CaKeyPair | null> {
    const keyPem = await readIfExists(this.keyPath);
    if (keyPem === null) return null;
    const certPem = await readIfExists(this.certPath);
    if (certPem === null) throw new NodemeshError(ErrorCode.BAD_CA, `${this.certPath}: missing while ${this.keyPath} exists; restore it or remove both to create a new root`);
    return { keyPem, certPem };
  }

  async saveIfAbsent(pair: CaKeyPair): Promise<CaKeyPair> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmpCert = await writeTemp(this.dir, CERT_FILE, pair.certPem, 0o644);
    const tmpKey = await writeTemp(this.dir, KEY_FILE, pair.keyPem, 0o600);
    let won = false;
    try {
      await link(tmpKey, this.keyPath);
      won = true;
      // Atomic, so a racing loser never reads half a certificate.
      await rename(tmpCert, this.certPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || won) throw err;
    } finally {
      await unlink(tmpKey);
      await unlink(tmpCert).catch(() => undefined);
    }
    return won ? pair : this.#waitForPeer();
  }

  async #waitForPeer(): Promise<CaKeyPair> {
    const deadline = Date.now() + PEER_WRITE_WAIT_MS;
    for (;;) {
      try {
        const stored = await this.load();
        if (stored) return stored;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      await sleep(50);
    }
  }
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function writeTemp(dir: string, name: string, data: string, mode: number): Promise<string> {
  const path = join(dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
  await writeFile(path, data, { mode, flag: 'wx' });
  return path;
}
