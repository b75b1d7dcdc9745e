// How a node process is started: the V8 flags and environment its launchers
// pass (the node DaemonSet in its container's command and env, the namespace
// test cluster on the command line and in the environment). On the command
// line, not in NODE_OPTIONS: node refuses the second flag there, and set at run
// time (v8.setFlagsFromString) it changed nothing.
// A small young generation: a proxy's garbage is mostly read buffers that die at
// once, and a small nursery frees them before they count against the node's
// memory. V8's default (up to 16 MiB semi-spaces) cost RSS with 1,000 tunnels
// 148 against 132 MiB and L4 req/s too (BENCHMARKS.md). 2 MiB, not 1: at 1 MiB
// the HTTP path's in-flight requests outlived two scavenges and filled the old
// generation; in-process (l7-inprocess.ts) 2 MiB took a fifth off the CPU per
// request and, at 1,000 req/s for 20 s, the major GCs from 2 to 0 and the
// longest pause from 8-10 to 2-3 ms, for 1-3 MiB more with 1,000 tunnels.
// V8 starts the semi-spaces at 1 MiB and grows them only under allocation.
//
// External memory (the ArrayBuffers behind socket reads) counted in V8's global
// heap limit, not against its own fixed budget: a bulk transfer allocates a few
// hundred MB/s of read buffers that all die young, yet once more than that
// budget (64 MB) piled up between two scavenges, as it does with 2 MiB
// semi-spaces, V8 ran a full mark-compact about every 50 ms. In-process
// (source and destination node, 1 GiB through one tunnel on one core): 64-88
// mark-compacts and 2.3-2.7 Gb/s without, 1 and 3.8-4.2 Gb/s with; the HTTP
// path's GCs and CPU per request did not move.
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=2', '--external-memory-accounted-in-global-limit'];

/**
 * Two malloc arenas. glibc gives each thread that allocates (data-plane
 * workers, V8's platform threads) an arena of its own, up to 8 per CPU, and
 * what a burst freed in one stays there: with 1,000 tunnels a bench node held
 * 2-4 MiB less (80.6-83.4 -> 78.5-79.1 MiB over two runs each), and the
 * workers row (1 and 2 workers) moved within its noise. glibc reads it once,
 * when the process starts.
 */
export const NODE_PROCESS_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
