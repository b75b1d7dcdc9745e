// HBONE constants shared by the listener and the client pool.

export const HBONE_PORT = 15008;
/** Large windows so one tunnel carries bulk transfers at full speed. */
export const HBONE_STREAM_WINDOW = 4 * 1024 * 1024;
export const HBONE_SESSION_WINDOW = 16 * 1024 * 1024;
/** nghttp2's per-session buffer budget must cover the windows above. */
export const HBONE_SESSION_MEMORY_MB = 64;
/** Response header carrying why a tunnel was refused, for the source daemon's error message. */
export const REASON_HEADER = 'nodemesh-reason';
