/**
 * Exponential backoff with jitter, clamped to [min, max] (defaults 1 min .. 1 h, delivery.retry).
 * Jitter spreads retries of a burst that failed together so they do not return together.
 * Pure: `random` is injected.
 */
export interface BackoffPolicy {
  minMs: number;
  maxMs: number;
}

export function backoffDelayMs(attempts: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempts - 1, 0), 30);
  const base = policy.minMs * 2 ** exponent;
  const jittered = base * (0.75 + 0.5 * random()); // +-25 %
  return Math.round(Math.min(policy.maxMs, Math.max(policy.minMs, jittered)));
}

/**
 * When to try next: Graph's Retry-After wins when it is given (no request before it has passed),
 * otherwise the backoff. A Retry-After longer than our max is still honoured.
 */
export function nextAttemptAt(now: number, attempts: number, retryAfterMs: number | null, policy: BackoffPolicy, random?: () => number): number {
  if (retryAfterMs !== null) return now + retryAfterMs;
  return now + backoffDelayMs(attempts, policy, random);
}
