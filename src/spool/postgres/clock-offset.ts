/**
 * The database's clock is the cluster's. Leases, pauses and the send windows are compared with
 * PostgreSQL's now() in SQL, but retry times and Retry-After pauses are decided on a relay, with
 * its own clock. Each relay therefore measures how far its clock is from the database's and
 * converts every absolute time it writes to or reads from the queue. Without it, a relay whose
 * clock ran an hour slow found nothing due for an hour (a new message's run_at is its receiving
 * relay's "now"), and one two seconds slow wrote Retry-After pauses that had already ended for
 * every other relay (test/integration/pg-clock-skew.test.ts shows both).
 */

import type { SpoolEntry } from '../entry.js';

/** One reading: this relay's clock before and after asking, and the database's answer. */
export interface ClockSample {
  sentAt: number;
  receivedAt: number;
  databaseMs: number;
}

export interface ClockOffset {
  /** Database time minus this relay's time, in milliseconds. */
  offsetMs: number;
  /** At most this far off: half the round trip of the sample used (the answer was made somewhere inside it). */
  uncertaintyMs: number;
}

/**
 * The offset from the sample with the shortest round trip (Cristian's algorithm): the database's
 * time is taken to be read halfway through it, so the error is at most half that round trip.
 */
export function offsetFromSamples(samples: readonly ClockSample[]): ClockOffset {
  if (samples.length === 0) throw new Error('no clock samples');
  let best = samples[0] as ClockSample;
  for (const s of samples) if (s.receivedAt - s.sentAt < best.receivedAt - best.sentAt) best = s;
  const roundTrip = Math.max(0, best.receivedAt - best.sentAt);
  return { offsetMs: Math.round(best.databaseMs - (best.sentAt + roundTrip / 2)), uncertaintyMs: roundTrip / 2 };
}

/**
 * 1 s: worth telling an operator about (NTP keeps clocks within milliseconds), though the
 * relay converts and keeps working correctly either way.
 */
export const NOTABLE_SKEW_MS = 1_000;

/** A time moved by `byMs` from one clock to the other; 0 ("no time") stays 0. */
export function shiftTime(ms: number, byMs: number): number {
  return ms === 0 ? 0 : ms + byMs;
}

/**
 * The entry with every time it carries moved by `byMs` (to the database's clock: +offset; back to
 * this relay's: -offset). Received, failed and requeued times decide a message's lifetime and age on
 * whichever relay reads them, so they are kept on the cluster's clock like the due time.
 */
export function shiftEntryTimes(entry: SpoolEntry, byMs: number): SpoolEntry {
  if (byMs === 0) return entry;
  const shift = (ms: number) => shiftTime(ms, byMs);
  return {
    ...entry,
    receivedAt: shift(entry.receivedAt),
    nextAttemptAt: shift(entry.nextAttemptAt),
    ...(entry.failedAt !== undefined ? { failedAt: shift(entry.failedAt) } : {}),
    ...(entry.requeuedAt !== undefined ? { requeuedAt: shift(entry.requeuedAt) } : {}),
    ...(entry.lastError ? { lastError: { ...entry.lastError, at: shift(entry.lastError.at) } } : {}),
  };
}
