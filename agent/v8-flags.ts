// How a node process is started: the V8 flags and environment its launchers
// pass (the node DaemonSet as NODE_OPTIONS and env, the namespace test cluster
// on the command line and in the environment).
// A 1 MiB young generation: a proxy's garbage is mostly read buffers that die at
// once, and a small nursery frees them before they count against the node's
// memory. On the benchmark it was faster too (smaller nursery, warmer cache):
// L4 14.3k vs 12.5k req/s, RSS with 1,000 tunnels 132 vs 148 MiB (BENCHMARKS.md).
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/**
 * Two malloc arenas. glibc gives each thread that allocates (data-plane
 * workers, V8's platform threads) an arena of its own, up to 8 per CPU, and
 * what a burst freed in one stays there: with 1,000 tunnels a bench node held
 * 2-4 MiB less (80.6-83.4 -> 78.5-79.1 MiB over two runs each), and the
 * workers row (1 and 2 workers) moved within its noise. glibc reads it once,
 * when the process starts.
 */
export const NODE_PROCESS_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
