/**
 * Retry-After (RFC 9110 §10.2.3) as Graph sends it: delay-seconds, sometimes fractional
 * ("Retry-After: 2.128" appears in Graph's throttling docs, graph-api-facts §3.1), or an HTTP-date.
 * Returns the delay in milliseconds from now, or null when absent or unparseable.
 */
export function parseRetryAfterMs(value: string | undefined, nowMs: number): number | null {
  if (value === undefined) return null;
  const trimmed = value.trim();
  if (trimmed === '') return null;
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.ceil(Number(trimmed) * 1000);
  // An HTTP-date always names a day and month ("Thu, 26 Nov 2026 12:00:05 GMT"); without letters,
  // Date.parse would read "-5" as a year.
  if (!/[A-Za-z]{3}/.test(trimmed)) return null;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - nowMs);
}
