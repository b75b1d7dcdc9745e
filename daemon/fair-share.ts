// A fair share of the node proxy's work under contention. The proxy is one event
// loop for every pod of its node: a pod flooding it (thousands of connections
// ping-ponging small messages) fills every loop iteration, and a quiet pod's
// request waits behind all of it. So when the loop lags, or the proxy waits for
// a CPU, the sources reading more than their share are read less.
//
// Shaped to cost nothing without contention: no per-chunk work and no per-socket
// timers. Each socket the node reads on a source's behalf is registered under
// that source once (a Map lookup and a 'close' listener): on the outbound side
// the pod's own connection at accept, on the inbound side each TCP tunnel's (or
// plaintext connection's) connection to the local pod, under the verified
// source workload, so a remote pod flooding this node is read less here too —
// on a node that shares its CPU with the destination pod the destination
// proxy's loop is where a quiet pod's requests wait. One timer every TICK_MS
// (50 ms) measures its own drift: how late it fired is how long work waited
// for the loop; and the proxy's CPU pressure, how long its tasks waited for a
// CPU (PRESSURE_CONTENDED). Below LAG_MS (2 ms) and that pressure, with nobody
// throttled, the tick returns at once. A late tick counts only when the loop
// itself was busy since the previous one (BUSY_UTILIZATION): a loop that was
// mostly idle and still fired late was kept off the CPU by other processes,
// which reading less cannot help.
// Past it, the tick reads each source's bytes read since it was last
// measured (socket.bytesRead, kept by libuv; closed sockets' counts are added as
// they close), scaled up by the capacity a throttled source was given, per ms:
// its demand. Every source over its share (the mean demand of the sources that
// read anything, or the only one that did while another was connected in the
// last five minutes) goes up one level per doubling of the lag over LAG_MS, to at
// most 12. A throttled source reads at 2^-level of its capacity: that share of
// its sockets (a different window of them each tick, the rest stopped at the
// libuv handle with readStop; #throttle says why sockets and not time). A calm
// tick where the source read no more than its share takes it a level down; a
// calm tick (lag under LAG_MS / 2, or a loop not busy itself) an eighth of one
// (CALM_STEP), so a flood that stops is back to full speed within 5 s and one
// that goes on is let back in a little each tick, not at once. Alone (no other source connected now or within
// SOURCE_MEMORY_MS) nothing is throttled and a throttled source is back to full
// speed at once: there is nobody to be fair to.
//
// Stopping at the handle leaves the stream's own flow control alone: a socket that
// its reader paused meanwhile (backpressure in the splice, HTTP pipelining) is not
// restarted by us; its own resume() restarts the read, as it would have.

import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import { logger } from '../core/log.ts';
import type { CpuPressure } from './cpu-pressure.ts';

const log = logger('outbound');

export const FAIR_TICK_MS = 50;

/**
 * What a source is counted under: its pod (namespace/name), on whichever side of
 * the node its traffic is read, so a pod's work adds up; an address when no
 * workload has it (a plaintext client from outside the mesh).
 */
export function sourceKey(workload: { namespace: string; name: string } | undefined, ip: string): string {
  return workload ? `${workload.namespace}/${workload.name}` : `ip:${ip}`;
}

/**
 * A tick this late means the loop is contended. 2 ms: an idle node's tick is
 * under 1 ms late, and the lag is paid on every hop (a request crosses two
 * proxies both ways). In the bench's fairness row the quiet pod's p99 beside a
 * flood that had settled was 73-102 ms at 5 ms and 23-25 ms at 2 ms (alone
 * 8-12 ms): at 5 ms the flood kept each loop 2.5-5 ms behind for good.
 */
export const FAIR_LAG_MS = 2;
/**
 * The share of the last tick's interval the loop must have spent working (not
 * waiting for I/O) for its lag to count as its own. Traced in the bench's
 * fairness row, where both nodes share one CPU with the origin: the
 * destination node, lightly loaded (utilization 0.05-0.2) but fired 5-10 ms
 * late because the source node was busy, found the quiet pod the heavier of
 * its two readers (the flood was throttled at the source) and throttled it to
 * level 12; its p99 went to 4.6 s. A loop behind on its own work is near 1.
 */
export const BUSY_UTILIZATION = 0.5;
/** At most 2^-12 of a source's capacity: 1 of 4,096 sockets, or one socket for 1/4,096 of each tick. */
const MAX_LEVEL = 12;
/** A calm tick's level down: one level per 8 calm ticks (400 ms), in eighths (exact in binary floating point). */
const CALM_STEP = 1 / 8;
/**
 * How long a source whose last socket closed still counts as a party to the
 * share. A pod that connects per request, polls or scrapes every minute or
 * reopens its pool holds no socket most of the time, and its next request
 * queues behind a flood all the same: five minutes (as long as the node keeps
 * a departed workload's metric series) keeps it in view, so a lone flood
 * beside it is read less from the first contended tick, not only once its next
 * connection has waited its way in (in the bench a quiet pod back after 60 s
 * found the flood unthrottled, both loops 100-200 ms late). An entry is a few
 * numbers per source, dropped oldest first at the tick.
 */
export const SOURCE_MEMORY_MS = 300_000;

interface Handle {
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

interface Source {
  sockets: Set<net.Socket>;
  /** Whether this node reads its requests (not only a local pod's answers to it): CPU pressure counts for it. */
  requests: boolean;
  /** Bytes read by its sockets that closed. */
  closedBytes: number;
  /** Total bytes read when it was last measured (a contended tick, or its first socket's registration), and when (performance.now()). */
  lastBytes: number;
  lastAt: number;
  level: number;
  /** Where the window of sockets allowed to read starts; moves every tick. */
  offset: number;
  resumeTimer?: NodeJS.Timeout;
  /** Sockets this source's pause stopped, with whether their stream was paused then. */
  stopped: Map<net.Socket, boolean>;
  /** Sockets registered since its last throttling tick: each reads through its first whole tick. */
  fresh: Set<net.Socket>;
  /** Its demand (bytes per ms, scaled up by its level) when last measured. */
  demand: number;
  /** When its last socket closed (performance.now()); it is forgotten SOURCE_MEMORY_MS later. */
  leftAt?: number;
}

export interface FairShareOptions {
  tickMs?: number;
  lagMs?: number;
  /** Called with the sources paused at a tick (tests, debugging). */
  onThrottle?: (throttled: { key: string; level: number }[]) => void;
  /** Where `nodemesh_fair_share_throttled_seconds_total` is registered. */
  registry?: Registry;
  /** How long a source with no socket left still counts (default SOURCE_MEMORY_MS). */
  memoryMs?: number;
  /** The proxy's CPU pressure, read each tick (none in tests: the machine's load would decide them). */
  cpuPressure?: CpuPressure;
}

/**
 * CPU pressure (cpu-pressure.ts): a tick during which the proxy's tasks waited
 * for a CPU this share of the time is contended, however late the tick fired.
 * When the proxy shares its CPUs with the work its sources cause (the
 * destination proxy and pod on the same node, or any other pod), its loop can
 * keep up with its own work and still hold every request back: in the bench's
 * fairness row (both nodes and the origin on one CPU, each node in its own
 * cgroup) the source node's loop was never 2 ms late while the quiet pod's p50
 * went from 1 to 4-5 ms, and its pressure was 0-0.1 with the flood held to a
 * few sockets, 0.3-0.5 once its window had grown back to a dozen. Counted for a
 * loop that did a quarter of the tick's work itself (PRESSURE_BUSY_UTILIZATION;
 * an idle one waiting behind other processes reads less for nobody, as with the
 * lag) and for the sources whose requests it reads (register). Two levels per
 * such tick, never past one socket reading (pressureLevelCap): at one a tick,
 * each time the window grew back the quiet pod's requests queued for several
 * ticks (quick runs, both nodes then reacting to pressure: p99 1.4-2.6x alone);
 * at two 1.0-1.2x, at a quarter 3-5x. With only the source node reacting, quick
 * runs gave 1.1-1.6x alone and the flood 4,200-5,700 req/s (12,000-20,000
 * unthrottled, when the quiet pod's p99 was 7-16x). Calm needs pressure under
 * PRESSURE_CALM as well.
 */
export const PRESSURE_CONTENDED = 0.25;
export const PRESSURE_BUSY_UTILIZATION = 0.25;
const PRESSURE_LEVELS = 2;
const PRESSURE_CALM = 0.1;

const THROTTLED_METRIC = 'nodemesh_fair_share_throttled_seconds_total';
const LAG_METRIC = 'nodemesh_event_loop_lag_max_seconds';

export class FairShare {
  readonly #tickMs: number;
  readonly #lagMs: number;
  readonly #onThrottle?: FairShareOptions['onThrottle'];
  readonly #sources = new Map<string, Source>();
  /** Sources with no socket, oldest departure first. */
  readonly #departed = new Map<string, Source>();
  readonly #memoryMs: number;
  readonly #cpuPressure?: CpuPressure;
  #timer: NodeJS.Timeout | undefined;
  #lastTickAt = 0;
  #lastUtilization: EventLoopUtilization | undefined;
  #throttled = 0;
  /** The latest the tick fired since the previous scrape, in ms. */
  #maxLag = 0;
  /** Times a source was paused (tests, metrics). */
  pauses = 0;
  readonly #throttledSeconds?: Counter;

  constructor(opts: FairShareOptions = {}) {
    this.#tickMs = opts.tickMs ?? FAIR_TICK_MS;
    this.#lagMs = opts.lagMs ?? FAIR_LAG_MS;
    this.#onThrottle = opts.onThrottle;
    this.#memoryMs = opts.memoryMs ?? SOURCE_MEMORY_MS;
    this.#cpuPressure = opts.cpuPressure;
    if (opts.registry) {
      this.#throttledSeconds = (opts.registry.getSingleMetric(THROTTLED_METRIC) as Counter | undefined) ??
        new Counter({ name: THROTTLED_METRIC, help: 'Seconds during which the node proxy read less from a source pod over its fair share because the event loop lagged or the proxy waited for a CPU (summed over sources).', registers: [opts.registry] });
      if (!opts.registry.getSingleMetric(LAG_METRIC)) {
        const self = this;
        new Gauge({
          name: LAG_METRIC, help: 'The longest the node proxy\'s event loop kept its fair-share timer waiting since the previous scrape (how long work queued for the loop).', registers: [opts.registry],
          collect() {
            this.set(self.#maxLag / 1000);
            self.#maxLag = 0;
          },
        });
      }
    }
  }

  start(): void {
    if (this.#timer) return;
    this.#lastTickAt = performance.now();
    this.#lastUtilization = performance.eventLoopUtilization();
    this.#timer = setInterval(() => this.#onTick(), this.#tickMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const source of this.#sources.values()) this.#resume(source);
  }

  /**
   * Counts `socket`'s reads toward its source pod until it closes. `reads`: the
   * source's requests (its own connection, on the outbound side or as a
   * plaintext client), or a local pod's answers to it (a tunnel's connection
   * to the pod). Only sources whose requests this node reads are read less for
   * CPU pressure: on the destination node the flood is already held back at
   * its own node, and what a busy destination spends its CPU on (handshakes,
   * streams) is not in the bytes — traced in the bench, the destination, busy
   * with the flood's tunnels starting, found the quiet pod's answers the
   * heaviest and held them back for 50-250 ms. Lag still counts for both.
   */
  register(key: string, socket: net.Socket, reads: 'requests' | 'answers' = 'requests'): void {
    let source = this.#sources.get(key);
    if (source?.leftAt !== undefined) {
      source.leftAt = undefined;
      this.#departed.delete(key);
    }
    if (!source) {
      source = { sockets: new Set(), requests: false, closedBytes: 0, lastBytes: socket.bytesRead, lastAt: performance.now(), fresh: new Set(), demand: 0, level: 0, offset: 0, stopped: new Map() };
      this.#sources.set(key, source);
    }
    const s = source;
    s.sockets.add(socket);
    if (reads === 'requests') s.requests = true;
    // A throttled pod's new connection has its first bytes read (a handshake, a first request):
    // a window reaches each socket only every 2^level ticks, which at level 12 is minutes.
    if (s.level > 0) s.fresh.add(socket);
    socket.on('close', () => {
      s.sockets.delete(socket);
      s.fresh.delete(socket);
      s.stopped.delete(socket);
      s.closedBytes += socket.bytesRead;
      if (s.sockets.size === 0 && this.#sources.get(key) === s) {
        clearTimeout(s.resumeTimer);
        s.leftAt = performance.now();
        this.#departed.set(key, s);
      }
    });
  }

  #onTick(): void {
    const now = performance.now();
    const lag = now - this.#lastTickAt - this.#tickMs;
    this.#lastTickAt = now;
    if (lag > this.#maxLag) this.#maxLag = lag;
    this.#forgetDeparted(now);
    // Over the interval since the previous tick (two reads of the loop's counters).
    const utilization = performance.eventLoopUtilization(this.#lastUtilization).utilization;
    this.#lastUtilization = performance.eventLoopUtilization();
    const pressure = this.#cpuPressure?.sample() ?? 0;
    if (lag < this.#lagMs && pressure < PRESSURE_CONTENDED && this.#throttled === 0) return;
    this.#rebalance(lag, utilization, pressure);
  }

  /** Drops the sources that left more than the memory ago: only those, oldest first. */
  #forgetDeparted(now: number): void {
    for (const [key, source] of this.#departed) {
      if (now - source.leftAt! < this.#memoryMs) return;
      this.#departed.delete(key);
      this.#sources.delete(key);
    }
  }

  /** Sources known now: with sockets, or whose last socket closed within the memory (tests, debugging). */
  get sources(): number {
    return this.#sources.size;
  }

  /** Exposed for tests: one tick's decision as if the loop lagged by `lag` ms, busy for `utilization` of the interval. */
  rebalance(lag: number, utilization = 1, pressure = 0): void {
    this.#rebalance(lag, utilization, pressure);
  }

  #rebalance(lag: number, utilization: number, pressure: number): void {
    const ownLag = utilization >= BUSY_UTILIZATION;
    const starved = pressure >= PRESSURE_CONTENDED && utilization >= PRESSURE_BUSY_UTILIZATION;
    const lagging = lag >= this.#lagMs && ownLag;
    // Not our work the loop waited for: as good as calm for climbing back.
    const calm = (lag < this.#lagMs / 2 || !ownLag) && pressure < PRESSURE_CALM;
    // What each source would have read per ms since it was last measured had it
    // not been throttled: its bytes, scaled up by the capacity it was given, over
    // the time. Shares are of that demand, not of what was read, or a quiet source
    // would become the heavy one as soon as the noisy one is slowed below it. A
    // rate and not the bytes since the previous tick: calm ticks measure nothing
    // (no work without contention), and a flood's first contended tick must be
    // able to act without waiting for a second one in a row (in the bench the
    // ticks of a starting flood alternated between 100 ms and 3 ms late, and the
    // pod went on unthrottled for 1.7 s). Throttled sources are measured every
    // tick, so their level held over the interval.
    const now = performance.now();
    const used = new Map<Source, number>();
    let total = 0;
    for (const source of this.#sources.values()) {
      let bytes = source.closedBytes;
      for (const socket of source.sockets) bytes += socket.bytesRead;
      const elapsed = now - source.lastAt;
      const measured = elapsed > 0 ? ((bytes - source.lastBytes) * 2 ** source.level) / elapsed : 0;
      // A throttled source reads on a few sockets scaled up by 2^level: a window that had little or
      // nothing to read says little about its demand, which halves at most per tick (else a quiet
      // source beside it became the heavier one for a tick, and was read less).
      const demand = source.level > 0 && source.sockets.size > 0 ? Math.max(measured, source.demand / 2) : measured;
      source.demand = demand;
      source.lastBytes = bytes;
      source.lastAt = now;
      if (demand > 0) {
        used.set(source, demand);
        total += demand;
      }
    }
    // Over its share: above the mean of the sources that read anything, or the
    // only one that did while another source is connected or was recently (it
    // waits behind this one). Alone, nobody is there to be fair to.
    const share = this.#sources.size > 1 ? total / Math.max(2, used.size) : Infinity;
    const paused: { key: string; level: number }[] = [];
    let throttled = 0;
    for (const [key, source] of this.#sources) {
      const delta = used.get(source) ?? 0;
      if (share === Infinity) {
        // Alone now: nobody to be fair to, so no level to climb down first.
        source.level = 0;
      } else if ((lagging || (starved && source.requests)) && delta > share) {
        const was = source.level;
        source.level = lagging
          ? Math.min(MAX_LEVEL, source.level + levelsFor(lag, this.#lagMs))
          : Math.min(source.level + PRESSURE_LEVELS, pressureLevelCap(source.sockets.size));
        if (was === 0 && source.level > 0) log.info('reading less from a source pod over its fair share: the event loop lags or the proxy waits for a CPU', { source: key, lagMs: Math.round(lag), cpuPressure: Math.round(pressure * 100) / 100, sources: used.size });
      } else if (source.level > 0 && delta <= share) {
        // Not (or no longer) the one the loop waits for: a level down at once.
        source.level = Math.max(0, source.level - 1);
      } else if (source.level > 0 && calm) {
        // A ramp, not a step: capacity back 9% a tick rather than doubled every ten, so the level
        // settles just under where the loop lags instead of swinging by 2x around it.
        source.level = Math.max(0, source.level - CALM_STEP);
      }
      if (source.level === 0) {
        if (source.stopped.size) {
          this.#resume(source);
          log.info('reading from a source pod at full speed again', { source: key });
        }
        continue;
      }
      // Gone for now: nothing to read less from; its level waits for its return.
      if (source.sockets.size === 0) continue;
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
      if (i < window || source.fresh.has(socket)) {
        this.#start(source, socket);
        reading.push(socket);
      } else {
        this.#stop(source, socket);
      }
    }
    source.fresh.clear();
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

/**
 * The highest level CPU pressure alone takes (or holds) a source with `sockets`
 * sockets to: one socket reading all of each tick. Pressure is not the loop's
 * own cost, and may come from anything on the node; climbing on it without
 * end took any pod heavier than its neighbours, however few its connections,
 * to 2^-12 of one socket's time — a bulk transfer on one connection beside a
 * quiet pod, starved while the node was busy. A flood of many connections is
 * still cut to one (in the bench's fairness row it settled at 1-4 of 2,000);
 * lag, which the flood itself causes, may take it further.
 */
export function pressureLevelCap(sockets: number): number {
  return sockets > 1 ? Math.log2(sockets) : 0;
}

/**
 * How many levels a lag of `lag` ms takes the sources over their share up: one
 * per doubling of the lag over `lagMs`, so capacity is divided by about how far
 * the loop is behind (5 ms late: one level; 20 ms: two; 160 ms: five). A flood
 * that starts all at once makes the ticks themselves late (the first lagged
 * 120-160 ms in the bench): one level per tick took the better part of a second
 * to bite, and the quiet pod's requests queued meanwhile.
 */
export function levelsFor(lag: number, lagMs: number): number {
  return Math.max(1, Math.ceil(Math.log2(lag / lagMs)));
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
