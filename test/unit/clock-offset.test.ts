import { describe, expect, it } from 'vitest';
import { offsetFromSamples } from '../../src/spool/postgres/clock-offset.js';

describe('the clock offset from the database (Cristian)', () => {
  it('takes the sample with the shortest round trip, read halfway through it', () => {
    // The database is 5,000 ms ahead; the first reading waited 40 ms on the way back, the second did not.
    const samples = [
      { sentAt: 1_000, receivedAt: 1_050, databaseMs: 6_010 },
      { sentAt: 2_000, receivedAt: 2_004, databaseMs: 7_002 },
      { sentAt: 3_000, receivedAt: 3_030, databaseMs: 8_001 },
    ];
    expect(offsetFromSamples(samples)).toEqual({ offsetMs: 5_000, uncertaintyMs: 2 });
  });

  it('a relay behind the database gets a positive offset, one ahead a negative one', () => {
    expect(offsetFromSamples([{ sentAt: 0, receivedAt: 0, databaseMs: 3_600_000 }]).offsetMs).toBe(3_600_000);
    expect(offsetFromSamples([{ sentAt: 3_600_000, receivedAt: 3_600_000, databaseMs: 0 }]).offsetMs).toBe(-3_600_000);
  });

  it('refuses to guess without a sample', () => {
    expect(() => offsetFromSamples([])).toThrow(/no clock samples/);
  });
});

describe('an entry moved between clocks', () => {
  it('moves every time it carries, and leaves 0 ("none") and absent times alone', async () => {
    const { shiftEntryTimes } = await import('../../src/spool/postgres/clock-offset.js');
    const entry = { version: 1 as const, id: '0MX6ATIPM27E5E0AEC1', receivedAt: 1_000, envelope: { mailFrom: 'a@x', rcptTo: ['b@x'] }, client: { address: '127.0.0.1', helo: 'h' }, size: 1, mailbox: 'm@x', attempts: 1, nextAttemptAt: 5_000, held: false, lastError: { at: 4_000, kind: 'transient' as const, message: 'x' }, failedAt: 0 };
    const moved = shiftEntryTimes(entry, 60_000);
    expect(moved).toMatchObject({ receivedAt: 61_000, nextAttemptAt: 65_000, lastError: { at: 64_000 }, failedAt: 0 });
    expect('requeuedAt' in moved).toBe(false);
    expect(shiftEntryTimes(moved, -60_000)).toEqual(entry);
    expect(shiftEntryTimes(entry, 0)).toBe(entry);
  });
});
