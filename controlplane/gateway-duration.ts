// Gateway API durations (GEP-2257): one to four "<1-5 digits><h|m|s|ms>" parts,
// e.g. "10s", "500ms", "1h30m". "0s" means no timeout.

const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const PART = /([0-9]{1,5})(h|ms|m|s)/g;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** Milliseconds, or null when `value` is not a Gateway API duration. */
export function parseGatewayDuration(value: string): number | null {
  if (!DURATION.test(value)) return null;
  let ms = 0;
  for (const [, digits, unit] of value.matchAll(PART)) ms += Number(digits) * UNIT_MS[unit!]!;
  return ms;
}
