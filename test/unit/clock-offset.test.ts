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
