import { describe, expect, it } from 'vitest';
import { backoffDelayMs, nextAttemptAt } from '../../src/delivery/backoff.js';
import { parseRetryAfterMs } from '../../src/graph/retry-after.js';

const policy = { minMs: 60_000, maxMs: 3_600_000 };

describe('backoff', () => {
  it('doubles from the minimum with +-25 % jitter', () => {
    expect(backoffDelayMs(1, policy, () => 0.5)).toBe(60_000);
    expect(backoffDelayMs(2, policy, () => 0.5)).toBe(120_000);
    expect(backoffDelayMs(3, policy, () => 1)).toBe(300_000);
    expect(backoffDelayMs(3, policy, () => 0)).toBe(180_000);
  });

  it('is clamped to [min, max]', () => {
    expect(backoffDelayMs(1, policy, () => 0)).toBe(60_000);
    expect(backoffDelayMs(40, policy, () => 1)).toBe(3_600_000);
  });

  it('lets Retry-After win over the backoff, even beyond the maximum', () => {
    expect(nextAttemptAt(1000, 1, 2500, policy)).toBe(3500);
    expect(nextAttemptAt(1000, 1, 7_200_000, policy)).toBe(7_201_000);
    expect(nextAttemptAt(1000, 2, null, policy, () => 0.5)).toBe(121_000);
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2026-11-26T12:00:00Z');
  it.each([
    ['10', 10_000],
    ['2.128', 2128],
    ['0', 0],
    [' 3 ', 3000],
    ['Thu, 26 Nov 2026 12:00:05 GMT', 5000],
    ['Thu, 26 Nov 2026 11:59:00 GMT', 0],
  ] as const)('parses %j', (value, ms) => expect(parseRetryAfterMs(value, now)).toBe(ms));

  it.each([[undefined], [''], ['soon'], ['-5']])('ignores %j', (value) => expect(parseRetryAfterMs(value, now)).toBeNull());
});
