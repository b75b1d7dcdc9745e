// Errors carry a stable `code` that callers and tests match on, and a message
// that tells the operator what to check.

export class NodemeshError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A user- or peer-supplied object failed validation; names the object and field. */
export class InvalidObjectError extends NodemeshError {
  readonly object: string;
  readonly field: string;
  constructor(object: string, field: string, reason: string) {
    super('NM_INVALID_OBJECT', `${object}: ${field}: ${reason}`);
    this.object = object;
    this.field = field;
  }
}

/** A caller is not who it claims, or is not allowed what it asks. */
export class NotAuthorizedError extends NodemeshError {
  constructor(message: string) {
    super('NM_NOT_AUTHORIZED', message);
  }
}

/** A listener could not bind: start-up stops. */
export class BindError extends NodemeshError {
  constructor(what: string, address: string, cause: unknown) {
    super('NM_BIND_FAILED', `${what}: cannot listen on ${address}: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

/** A mesh peer did not behave: handshake, identity or protocol. */
export class PeerError extends NodemeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NM_PEER', message, options);
  }
}
