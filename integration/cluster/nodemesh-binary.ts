// The nodemesh executable the test cluster runs: the shipped bundle (dist/),
// rebuilt from the current sources once per test process, so end-to-end tests
// and benchmarks measure what the image runs, never a stale build.

import { buildDist } from '../../scripts/build.ts';

let built: Promise<string> | undefined;

export function nodemeshBinary(): Promise<string> {
  built ??= buildDist();
  return built;
}
