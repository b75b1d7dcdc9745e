// A fair share of the node proxy's work under contention. The proxy is one event
// loop for every pod of its node: a pod flooding it (thousands of connections
// ping-ponging small messages) fills every loop iteration, and a quiet pod's
// request waits behind all of it (measured: 3.6 → 110.8 ms p50). So when the loop
// lags, the sources reading more than their share are read less.
//
// Shaped to cost nothing without contention: no per-chunk work and no per-socket
// timers. Each outbound client socket is registered under its source pod once, at
// accept (a Map lookup and a 'close' listener). One timer every TICK_MS measures
// its own drift: how late it fired is how long a request waited for the loop.
// Below LAG_MS and with nobody throttled the tick returns at once. Past it, the
// tick reads each source's bytes read since the last tick (socket.bytesRead, kept
// by libuv; closed sockets' counts are added as they close), and every source
// reading more than the fair share (the total over the active sources) goes up a
// level: its sockets stop reading (readStop on the libuv handle) for 1 - 2^-level
// of each tick (50 %, 75 %, … up to 15/16), one timer per source restarting them.
// A calm tick (lag below LAG_MS / 2) takes throttled sources down a level every
// CALM_TICKS_PER_LEVEL ticks, so a flood that stops returns to full speed in
// about a second and one that goes on is not let back in at once. With one
// active source nothing is paused: there is nobody to be fair to.
//
// Pausing at the handle leaves the stream's own flow control alone: a socket that
// its reader paused meanwhile (backpressure in the splice, HTTP pipelining) is not
// restarted by us; its own resume() restarts the read, as it would have.

import type net from 'node:net';

export const FAIR_TICK_MS = 50;
/** A tick this late means the loop is contended. */
export const FAIR_LAG_MS = 10;
const MAX_LEVEL = 4;
const CALM_TICKS_PER_LEVEL = 4;

interface Handle {
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

interface Source {
  sockets: Set<net.Socket>;
  /** Bytes read by its sockets that closed. */
  closedBytes: number;
  /** Total bytes read at the previous contended tick, and which tick that was. */
  lastBytes: number;
  lastTick: number;
  level: number;
  calmTicks: number;
  resumeTimer?: NodeJS.Timeout;
  /** Sockets this source's pause stopped, with whether their stream was paused then. */
  stopped: Map<net.Socket, boolean>;
}

export interface FairShareOptions {
  tickMs?: number;
  lagMs?: number;
  /** Called with the sources paused at a tick (tests, debugging). */
  onThrottle?: (throttled: { key: string; level: number }[]) => void;
}

export class FairShare {
  readonly #tickMs: number;
  readonly #lagMs: number;
  readonly #onThrottle?: FairShareOptions['onThrottle'];
  readonly #sources = new Map<string, Source>();
  #timer: NodeJS.Timeout | undefined;
  #lastTickAt = 0;
  #tick = 0;
  #throttled = 0;
  /** Times a source was paused (tests, metrics). */
  pauses = 0;

  constructor(opts: FairShareOptions = {}) {
    this.#tickMs = opts.tickMs ?? FAIR_TICK_MS;
    this.#lagMs = opts.lagMs ?? FAIR_LAG_MS;
    this.#onThrottle = opts.onThrottle;
  }

  start(): void {
    if (this.#timer) return;
    this.#lastTickAt = performance.now();
    this.#timer = setInterval(() => this.#onTick(), this.#tickMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const source of this.#sources.values()) this.#resume(source);
  }

  /** Counts `socket`'s reads toward its source pod until it closes. */
  register(key: string, socket: net.Socket): void {
    let source = this.#sources.get(key);
    if (!source) {
      source = { sockets: new Set(), closedBytes: 0, lastBytes: 0, lastTick: -1, level: 0, calmTicks: 0, stopped: new Map() };
      this.#sources.set(key, source);
    }
    const s = source;
    s.sockets.add(socket);
    socket.once('close', () => {
      s.sockets.delete(socket);
      s.stopped.delete(socket);
      s.closedBytes += socket.bytesRead;
      if (s.sockets.size === 0 && s.level === 0 && this.#sources.get(key) === s) {
        clearTimeout(s.resumeTimer);
        this.#sources.delete(key);
      }
    });
  }

  #onTick(): void {
    const now = performance.now();
    const lag = now - this.#lastTickAt - this.#tickMs;
    this.#lastTickAt = now;
    this.#tick++;
    if (lag < this.#lagMs && this.#throttled === 0) return;
    this.#rebalance(lag);
  }

  /** Exposed for tests: one tick's decision as if the loop lagged by `lag` ms. */
  rebalance(lag: number): void {
    this.#tick++;
    this.#rebalance(lag);
  }

  #rebalance(lag: number): void {
    const contended = lag >= this.#lagMs;
    const calm = lag < this.#lagMs / 2;
    // Bytes each source read since the previous contended tick; a source first seen
    // now has no baseline yet and is measured from the next tick.
    const used = new Map<Source, number>();
    let total = 0;
    for (const source of this.#sources.values()) {
      let bytes = source.closedBytes;
      for (const socket of source.sockets) bytes += socket.bytesRead;
      const measured = source.lastTick === this.#tick - 1;
      const delta = measured ? bytes - source.lastBytes : 0;
      source.lastBytes = bytes;
      source.lastTick = this.#tick;
      if (delta > 0) {
        used.set(source, delta);
        total += delta;
      }
    }
    const share = used.size > 1 ? total / used.size : Infinity;
    const paused: { key: string; level: number }[] = [];
    let throttled = 0;
    for (const [key, source] of this.#sources) {
      const delta = used.get(source) ?? 0;
      if (contended && delta > share) {
        source.level = Math.min(MAX_LEVEL, source.level + 1);
        source.calmTicks = 0;
      } else if (source.level > 0 && (calm || delta <= share) && ++source.calmTicks >= CALM_TICKS_PER_LEVEL) {
        source.level--;
        source.calmTicks = 0;
      }
      if (source.level === 0) {
        if (source.sockets.size === 0) this.#sources.delete(key);
        continue;
      }
      throttled++;
      this.#pause(source, this.#tickMs * (1 - 2 ** -source.level));
      paused.push({ key, level: source.level });
    }
    this.#throttled = throttled;
    if (paused.length) this.#onThrottle?.(paused);
  }

  /** Stops reading on the source's sockets for `ms`. */
  #pause(source: Source, ms: number): void {
    clearTimeout(source.resumeTimer);
    for (const socket of source.sockets) {
      const handle = handleOf(socket);
      if (!handle?.reading || source.stopped.has(socket)) continue;
      handle.reading = false;
      handle.readStop();
      source.stopped.set(socket, socket.isPaused());
    }
    this.pauses++;
    source.resumeTimer = setTimeout(() => this.#resume(source), ms);
    source.resumeTimer.unref();
  }

  #resume(source: Source): void {
    clearTimeout(source.resumeTimer);
    source.resumeTimer = undefined;
    for (const [socket, wasPaused] of source.stopped) {
      const handle = handleOf(socket);
      // Paused by its own reader since: its resume() restarts the read.
      if (!handle || handle.reading || socket.destroyed || socket.isPaused() !== wasPaused) continue;
      handle.reading = true;
      handle.readStart();
    }
    source.stopped.clear();
  }
}

function handleOf(socket: net.Socket): Handle | undefined {
  const handle = (socket as unknown as { _handle?: Handle | null })._handle;
  return handle && typeof handle.readStop === 'function' ? handle : undefined;
}
