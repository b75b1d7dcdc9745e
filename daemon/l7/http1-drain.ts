// Draining the HTTP/1 connections of a server that never listens (captured
// sockets and tunnel streams are handed to it, so node's own
// closeIdleConnections, which tracks only a listening server's sockets, sees
// none). On drain, every response that has not started says `connection:
// close`, so a client sending requests moves to the next daemon on its next
// request without an error; a connection with nothing in flight is ended once it
// has been idle for a moment, not at once: a client may be writing a request on
// it right now, and a close racing that request is the error a drain must not
// cause.

import type http from 'node:http';
import type { Duplex } from 'node:stream';

/** How long a connection must have been idle before a drain ends it. */
const IDLE_BEFORE_CLOSE_MS = 1000;
const SWEEP_MS = 250;

interface State {
  inFlight: number;
  idleSince: number;
}

export class Http1Connections {
  readonly #open = new Map<Duplex, State>();
  #draining = false;
  #sweep: NodeJS.Timeout | undefined;

  /** Call before the server's own 'request' listeners are added. */
  constructor(server: http.Server) {
    server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const state = this.#open.get(req.socket);
      if (this.#draining) res.shouldKeepAlive = false;
      if (!state) return;
      state.inFlight++;
      res.on('close', () => {
        state.inFlight--;
        state.idleSince = Date.now();
      });
    });
  }

  /** A connection handed to the server. */
  add(connection: Duplex): void {
    this.#open.set(connection, { inFlight: 0, idleSince: Date.now() });
    connection.on('close', () => this.#open.delete(connection));
  }

  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#sweep = setInterval(() => this.#closeIdle(), SWEEP_MS);
    this.#sweep.unref();
    this.#closeIdle();
  }

  stop(): void {
    clearInterval(this.#sweep);
  }

  #closeIdle(): void {
    const now = Date.now();
    for (const [connection, state] of this.#open) {
      if (state.inFlight === 0 && now - state.idleSince >= IDLE_BEFORE_CLOSE_MS) connection.end();
    }
  }
}
