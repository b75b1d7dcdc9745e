// HBONE constants shared by the listener and the client pool.

export const HBONE_PORT = 15008;
/** Large windows so one tunnel carries bulk transfers at full speed. */
export const HBONE_STREAM_WINDOW = 4 * 1024 * 1024;
export const HBONE_SESSION_WINDOW = 16 * 1024 * 1024;
/** nghttp2's per-session buffer budget must cover the windows above. */
export const HBONE_SESSION_MEMORY_MB = 64;
/** Response header carrying why a tunnel was refused, for the source daemon's error message. */
export const REASON_HEADER = 'nodemesh-reason';

/**
 * Streams per HBONE connection, advertised as SETTINGS_MAX_CONCURRENT_STREAMS and
 * the most the pool puts on one session. 100, as ztunnel's pool: a peer that
 * needs more opens another connection (hbone-pool.ts does), so the limit never
 * refuses a well-behaved peer, while one connection can no longer hold 10,000
 * streams (each a pod connection and nghttp2 state) at once.
 */
export const HBONE_MAX_CONCURRENT_STREAMS = 100;
/**
 * A CONNECT carries four headers (:method, :authority, forwarded, maybe a
 * traceparent): 32 pairs and 8 KiB of header list leave room for tracing
 * headers and none for a peer that sends megabytes of them.
 */
export const HBONE_MAX_HEADER_PAIRS = 32;
export const HBONE_MAX_HEADER_LIST_SIZE = 8 * 1024;
/**
 * Invalid frames, and streams refused for want of room, that end a session:
 * a peer that keeps sending them is misbehaving, not unlucky (node's defaults
 * are 1,000 and 100).
 */
export const HBONE_MAX_INVALID_FRAMES = 100;
export const HBONE_MAX_REJECTED_STREAMS = 100;
/** From accept to the peer's HTTP/2 SETTINGS (TLS and the preface included): 10 s, as the pool's own connect timeout. */
export const HBONE_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Open tunnel streams one peer (a source identity on one source node) may hold
 * to this node's pods at once. 10,000 is 100 full connections of one workload
 * on one node, far beyond normal use, and bounds the pod connections and file
 * descriptors one peer can take from every other.
 */
export const HBONE_MAX_STREAMS_PER_PEER = 10_000;
/**
 * How long the pool keeps a session with no open tunnel before closing it
 * (GOAWAY): a minute, so a client's next burst usually finds its session warm
 * while sessions to peers it stopped talking to do not pile up.
 */
export const HBONE_POOL_IDLE_TIMEOUT_MS = 60_000;
/**
 * How long the HBONE listener keeps an accepted session with no open stream
 * (none since its SETTINGS, or none since its last stream closed) before
 * closing it with a GOAWAY. Twice the pool's idle timeout, so our own peers
 * always close their idle sessions first (no GOAWAY racing their next
 * CONNECT), while a peer that opens sessions and leaves them idle holds each
 * for at most two minutes instead of forever (a socket, TLS and nghttp2 state
 * each).
 */
export const HBONE_IDLE_TIMEOUT_MS = 120_000;
