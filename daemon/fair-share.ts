// A fair share of the node proxy's work under contention. The proxy is one event
// loop for every pod of its node: a pod flooding it (thousands of connections
// ping-ponging small messages) fills every loop iteration, and a quiet pod's
// request waits behind all of it. So when the loop lags, the sources reading
// more than their share are read less.
//
// Shaped to cost nothing without contention: no per-chunk work and no per-socket
// timers. Each outbound client socket is registered under its source pod once, at
// accept (a Map lookup and a 'close' listener). One timer every TICK_MS (50 ms)
// measures its own drift: how late it fired is how long work waited for the loop.
// Below LAG_MS (5 ms) and with nobody throttled the tick returns at once. Past
// it, the tick reads each source's bytes read since the previous tick
// (socket.bytesRead, kept by libuv; closed sockets' counts are added as they
// close), scaled up by the capacity a throttled source was given (its demand),
// and every source whose demand is over the fair share (the total over the
// sources that read anything) goes up a level, to at most 12. A throttled
// source reads at 2^-level of its capacity: that share of its sockets (a
// different window of them each tick, the rest stopped at the libuv handle with
// readStop; #throttle says why sockets and not time). A calm tick (lag under LAG_MS / 2), or one where the source read no more
// than its share, counts toward a level down, one per CALM_TICKS_PER_LEVEL (10),
// so a flood that stops is back to full speed within 6 s and one that goes
// on is not let back in at once. With one active source nothing is throttled:
// there is nobody to be fair to.
//
// Stopping at the handle leaves the stream's own flow control alone: a socket that
// its reader paused meanwhile (backpressure in the splice, HTTP pipelining) is not
// restarted by us; its own resume() restarts the read, as it would have.

import type net from 'node:net';
import { Counter } from 'prom-client';
import type { Registry } from 'prom-client';
import { logger } from '../core/log.ts';

const log = logger('outbound');

export const FAIR_TICK_MS = 50;
/** A tick this late means the loop is contended. */
export const FAIR_LAG_MS = 5;
/** At most 2^-12 of a source's capacity: 1 of 4,096 sockets, or one socket for 1/4,096 of each tick. */
const MAX_LEVEL = 12;
const CALM_TICKS_PER_LEVEL = 10;

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
  /** Where the window of sockets allowed to read starts; moves every tick. */
  offset: number;
  resumeTimer?: NodeJS.Timeout;
  /** Sockets this source's pause stopped, with whether their stream was paused then. */
  stopped: Map<net.Socket, boolean>;
}

export interface FairShareOptions {
  tickMs?: number;
  lagMs?: number;
  /** Called with the sources paused at a tick (tests, debugging). */
  onThrottle?: (throttled: { key: string; level: number }[]) => void;
  /** Where `nodemesh_fair_share_throttled_seconds_total` is registered. */
  registry?: Registry;
}

const THROTTLED_METRIC = 'nodemesh_fair_share_throttled_seconds_total';

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
  readonly #throttledSeconds?: Counter;

  constructor(opts: FairShareOptions = {}) {
    this.#tickMs = opts.tickMs ?? FAIR_TICK_MS;
    this.#lagMs = opts.lagMs ?? FAIR_LAG_MS;
    this.#onThrottle = opts.onThrottle;
    if (opts.registry) {
      this.#throttledSeconds = (opts.registry.getSingleMetric(THROTTLED_METRIC) as Counter | undefined) ??
        new Counter({ name: THROTTLED_METRIC, help: 'Seconds during which the node proxy read less from a source pod over its fair share because the event loop lagged (summed over sources).', registers: [opts.registry] });
    }
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
      source = { sockets: new Set(), closedBytes: 0, lastBytes: 0, lastTick: -1, level: 0, calmTicks: 0, offset: 0, stopped: new Map() };
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
    // What each source would have read since the previous tick had it not been
    // throttled: the bytes it read, scaled up by the capacity it was given. Shares
    // are of that demand, not of what was read, or a quiet source would become the
    // heavy one as soon as the noisy one is slowed below it. A source first seen
    // now has no baseline yet and is measured from the next tick.
    const used = new Map<Source, number>();
    let total = 0;
    for (const source of this.#sources.values()) {
      let bytes = source.closedBytes;
      for (const socket of source.sockets) bytes += socket.bytesRead;
      const measured = source.lastTick === this.#tick - 1;
      const delta = measured ? (bytes - source.lastBytes) * 2 ** source.level : 0;
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
        if (source.level === 0) log.info('reading less from a source pod over its fair share: the event loop lags', { source: key, lagMs: Math.round(lag), sources: used.size });
        source.level = Math.min(MAX_LEVEL, source.level + 1);
        source.calmTicks = 0;
      } else if (source.level > 0 && (calm || delta <= share) && ++source.calmTicks >= CALM_TICKS_PER_LEVEL) {
        source.level--;
        source.calmTicks = 0;
      }
      if (source.level === 0) {
        if (source.stopped.size) {
          this.#resume(source);
          log.info('reading from a source pod at full speed again', { source: key });
        }
        if (source.sockets.size === 0) this.#sources.delete(key);
        continue;
      }
      throttled++;
      this.#throttledSeconds?.inc(this.#tickMs / 1000);
      this.#throttle(source);
      paused.push({ key, level: source.level });
    }
    this.#throttled = throttled;
    if (paused.length) this.#onThrottle?.(paused);

  }

  /**
   * Lets the source read at 2^-level of its capacity during the next tick: that
   * share of its sockets (a different window of them each tick, the rest stopped);
   * a source with fewer sockets than that reads on one for that share of the tick.
   * Sockets, not time: a ping-pong flood has one message waiting per connection,
   * so a socket allowed to read for any part of a tick reads it (traced in the
   * bench: at a quarter of the sockets for a quarter of each tick, the flood still
   * sent one request per window socket per tick; sockets alone gave the quiet pod
   * p50 11 / p99 330 ms, both together 18 / 475 ms).
   */
  #throttle(source: Source): void {
    clearTimeout(source.resumeTimer);
    source.resumeTimer = undefined;
    const sockets = [...source.sockets];
    const n = sockets.length;
    if (n === 0) return;
    const share = 2 ** -source.level;
    const window = Math.max(1, Math.round(n * share));
    source.offset = (source.offset + window) % n;
    const reading: net.Socket[] = [];
    for (let i = 0; i < n; i++) {
      const socket = sockets[(source.offset + i) % n]!;
      if (i < window) {
        this.#start(source, socket);
        reading.push(socket);
      } else {
        this.#stop(source, socket);
      }
    }
    this.pauses++;
    const timeShare = Math.min(1, n * share);
    if (timeShare < 1) {
      source.resumeTimer = setTimeout(() => {
        for (const socket of reading) this.#stop(source, socket);
      }, this.#tickMs * timeShare);
      source.resumeTimer.unref();
    }
  }

  /**
   * Stops reading on `socket` until #start. Its reader may restart the handle
   * behind our back (node's HTTP server calls readStart itself when it resumes
   * a socket), so the handle's readStart is held off too, on the instance.
   */
  #stop(source: Source, socket: net.Socket): void {
    const handle = handleOf(socket);
    if (!handle || socket.destroyed) return;
    if (handle.reading) {
      handle.reading = false;
      handle.readStop();
    }
    if (source.stopped.has(socket)) return;
    source.stopped.set(socket, socket.isPaused());
    handle.readStart = heldReadStart;
  }

  #start(source: Source, socket: net.Socket): void {
    const wasPaused = source.stopped.get(socket);
    if (wasPaused === undefined) return;
    source.stopped.delete(socket);
    const handle = handleOf(socket);
    if (!handle) return;
    // The prototype's readStart again.
    delete (handle as Partial<Handle>).readStart;
    // Paused by its own reader since: its resume() restarts the read.
    if (handle.reading || socket.destroyed || socket.isPaused() !== wasPaused) return;
    handle.reading = true;
    handle.readStart();
  }

  #resume(source: Source): void {
    clearTimeout(source.resumeTimer);
    source.resumeTimer = undefined;
    for (const socket of [...source.stopped.keys()]) this.#start(source, socket);
  }
}

/** A held socket's handle.readStart while it is stopped: the read stays stopped, and says so. */
function heldReadStart(this: Handle): number {
  this.reading = false;
  return 0;
}

function handleOf(socket: net.Socket): Handle | undefined {
  const handle = (socket as unknown as { _handle?: Handle | null })._handle;
  return handle && typeof handle.readStop === 'function' ? handle : undefined;
}
