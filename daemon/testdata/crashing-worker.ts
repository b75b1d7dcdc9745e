// A data-plane worker that dies once: the real worker (../data-plane-worker.ts),
// which throws 300 ms after it started unless the marker file named by
// NODEMESH_TEST_CRASH_MARKER exists; it makes the file first, so the worker
// started again lives (workers.test.ts).

import { existsSync, writeFileSync } from 'node:fs';
import '../data-plane-worker.ts';

const marker = process.env.NODEMESH_TEST_CRASH_MARKER;
if (marker && !existsSync(marker)) {
  writeFileSync(marker, 'crashed once\n');
  setTimeout(() => {
    throw new Error('a worker dying on purpose');
  }, 300);
}
