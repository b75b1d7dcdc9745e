// How a node process is started: the V8 flags and environment its launchers
// pass (the node DaemonSet as NODE_OPTIONS and env, the namespace test cluster
// on the command line and in the environment).
// A small young generation: a proxy's garbage is mostly read buffers that die at
// once, and a small nursery frees them before they count against the node's
// memory. V8's default (up to 16 MiB semi-spaces) cost RSS with 1,000 tunnels
// 148 against 132 MiB and L4 req/s too (BENCHMARKS.md). 2 MiB, not 1: at 1 MiB
// the HTTP path's in-flight requests outlived two scavenges and filled the old
// generation; in-process (l7-inprocess.ts) 2 MiB took a fifth off the CPU per
// request and, at 1,000 req/s for 20 s, the major GCs from 2 to 0 and the
// longest pause from 8-10 to 2-3 ms, for 1-3 MiB more with 1,000 tunnels.
// V8 starts the semi-spaces at 1 MiB and grows them only under allocation.
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/**
 * Two malloc arenas. glibc gives each thread that allocates (data-plane
 * workers, V8's platform threads) an arena of its own, up to 8 per CPU, and
 * what a burst freed in one stays there: with 1,000 tunnels a bench node held
 * 2-4 MiB less (80.6-83.4 -> 78.5-79.1 MiB over two runs each), and the
 * workers row (1 and 2 workers) moved within its noise. glibc reads it once,
 * when the process starts.
 */
export const NODE_PROCESS_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
