import { describe, expect, it } from 'vitest';
import { isQueueId, newQueueId } from '../../src/spool/queue-id.js';

describe('queue ids', () => {
  it('are unique per message (across pool refills), valid file names, and sort by time', () => {
    const ids = Array.from({ length: 5000 }, () => newQueueId(1_700_000_000_000));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every(isQueueId)).toBe(true);
    const earlier = newQueueId(1_700_000_000_000);
    const later = newQueueId(1_700_000_000_001);
    expect(earlier < later).toBe(true);
  });
});
