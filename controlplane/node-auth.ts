// Node authentication: turns the bearer token of a control-API call into the
// name of the node it speaks for. File mode maps tokens from a file; Kubernetes
// mode verifies a projected ServiceAccount token with a TokenReview.

import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { ErrorCode, NodemeshError, NotAuthorizedError } from '../core/errors.ts';

export interface NodeAuthenticator {
  /** Resolves to the caller's node name; rejects with NotAuthorizedError. */
  authenticate(token: string): Promise<string>;
}

/**
 * `--node-tokens FILE`: one `node-name: token` per line (YAML mapping shape),
 * `#` comments allowed. Tokens must be unique.
 */
export class FileTokenAuthenticator implements NodeAuthenticator {
  readonly #tokens = new Map<string, string>();

  constructor(entries: Record<string, string>) {
    for (const [node, token] of Object.entries(entries)) {
      if (!token || token.length < 16) throw new NodemeshError(ErrorCode.BAD_TOKEN_FILE, `node-tokens: token for node ${JSON.stringify(node)} is shorter than 16 characters`);
      if (this.#tokens.has(token)) throw new NodemeshError(ErrorCode.BAD_TOKEN_FILE, `node-tokens: node ${JSON.stringify(node)} reuses another node's token`);
      this.#tokens.set(token, node);
    }
  }

  static fromFile(path: string): FileTokenAuthenticator {
    const entries: Record<string, string> = {};
    const lines = readFileSync(path, 'utf8').split('\n');
    lines.forEach((raw, i) => {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) return;
      const m = /^([a-z0-9]([-.a-z0-9]*[a-z0-9])?)\s*:\s*(\S+)$/.exec(line);
      if (!m) throw new NodemeshError(ErrorCode.BAD_TOKEN_FILE, `${path}:${i + 1}: expected "node-name: token"`);
      entries[m[1]!] = m[3]!;
    });
    return new FileTokenAuthenticator(entries);
  }

  async authenticate(token: string): Promise<string> {
    const given = Buffer.from(token);
    for (const [known, node] of this.#tokens) {
      const k = Buffer.from(known);
      if (k.length === given.length && timingSafeEqual(k, given)) return node;
    }
    throw new NotAuthorizedError('unknown node token: check the token file given to this node against --node-tokens of the control plane');
  }
}
