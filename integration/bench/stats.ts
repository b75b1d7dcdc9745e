// Small numeric helpers shared by the benchmark runs and the report.

/** Median of the numbers present; null when there are none. */
export function median(values: (number | null)[]): number | null {
  const present = values.filter((v): v is number => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
  if (present.length === 0) return null;
  const mid = present.length >> 1;
  return present.length % 2 ? present[mid]! : (present[mid - 1]! + present[mid]!) / 2;
}

/** Rounds to `digits` significant decimals, keeping null. */
export function round(value: number | null, digits = 3): number | null {
  if (value === null) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
