// Polling for state that changes asynchronously (config reaching a node, a process
// exiting), with a failure message that says what never happened.

import { ErrorCode, NodemeshError } from '../../core/errors.ts';

export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new NodemeshError(ErrorCode.E2E_TIMEOUT, `timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
