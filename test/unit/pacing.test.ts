import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AttemptResult } from '../../src/delivery/attempt.js';
import { pacedUntil, recordSend, Scheduler } from '../../src/delivery/scheduler.js';
import { silentLogger } from '../../src/log.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import { FsSpool } from '../../src/spool/fs/fs-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';

describe('per-mailbox pacing (pure)', () => {
  const empty = { sentTimes: [] as number[], sentRecipients: [] as Array<{ at: number; count: number }> };

  it('lets the 30th message of a minute go and holds the 31st until the first leaves the window', () => {
    const sentTimes = Array.from({ length: 30 }, (_, i) => 1000 + i * 100);
    expect(pacedUntil({ ...empty, sentTimes: sentTimes.slice(0, 29) }, 1, 5000, { messagesPerMinute: 30 })).toBe(5000);
    expect(pacedUntil({ ...empty, sentTimes }, 1, 5000, { messagesPerMinute: 30 })).toBe(61_000);
  });

  it('holds mail that would exceed the daily recipient budget until enough leaves the 24-hour window', () => {
    const sentRecipients = [
      { at: 0, count: 6000 },
      { at: 3_600_000, count: 3900 },
    ];
    expect(pacedUntil({ ...empty, sentRecipients }, 100, 7_200_000, { recipientsPerDay: 10_000 })).toBe(7_200_000);
    expect(pacedUntil({ ...empty, sentRecipients }, 101, 7_200_000, { recipientsPerDay: 10_000 })).toBe(86_400_000);
  });

  it('keeps its windows bounded at any rate: a day at 4 msg/s leaves at most 1,440 day buckets and a minute of times', () => {
    const state = { sentTimes: [] as number[], sentRecipients: [] as Array<{ at: number; count: number }> };
    const day = 86_400_000;
    for (let t = 0; t < day + 3_600_000; t += 250) recordSend(state, 2, t);
    const now = day + 3_600_000;
    expect(state.sentRecipients.length).toBeLessThanOrEqual(1440);
    expect(state.sentTimes.length).toBeLessThanOrEqual(60 * 4);
    // The last day's recipients are all still counted: 24 h at 4/s x 2 = 691,200 (a bucket straddling
    // the window's start may still count up to one minute's worth more: conservative).
    const counted = state.sentRecipients.reduce((sum, r) => sum + r.count, 0);
    expect(counted).toBeGreaterThanOrEqual(691_200);
    expect(counted).toBeLessThanOrEqual(691_200 + 60 * 4 * 2);
    // So a 10,000-recipient budget holds the next message until old buckets leave the window.
    expect(pacedUntil(state, 1, now, { recipientsPerDay: 10_000 })).toBeGreaterThan(now);
    expect(pacedUntil(state, 1, now, { messagesPerMinute: 30 })).toBeGreaterThan(now);
  });

  it('does nothing when the limits are off', () => {
    expect(pacedUntil({ sentTimes: Array(500).fill(1), sentRecipients: [{ at: 1, count: 1e6 }] }, 10, 2, {})).toBe(2);
  });
});

describe('per-mailbox pacing (scheduler, fake clock)', () => {
  let dir: string | undefined;
  afterEach(async () => {
    vi.useRealTimers();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('holds the configured rate: 90 messages at 30 per minute leave in three waves, a minute apart', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-pace-'));
    const spool = new FsSpool(dir);
    await spool.recover();
    const entries: SpoolEntry[] = [];
    for (let i = 0; i < 90; i++) {
      const id = newQueueId();
      const writer = await spool.beginMessage(id);
      await writer.write(Buffer.from('Subject: x\r\n\r\nx\r\n'));
      entries.push(await writer.commit({ id, receivedAt: 0, envelope: { mailFrom: 'a@x', rcptTo: ['b@x'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: 'm@x' }));
    }
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const start = Date.now();
    const sentAt: number[] = [];
    const scheduler = new Scheduler(
      { maxInFlightPerMailbox: 4, backoff: { minMs: 1000, maxMs: 1000 }, maxQueueLifetimeMs: 1e9, messagesPerMinute: 30 },
      {
        spool,
        clock: { now: () => Date.now() },
        logger: silentLogger(),
        attempt: async (): Promise<AttemptResult> => {
          sentAt.push(Date.now() - start);
          return { decision: { action: 'delivered' } };
        },
      },
    );
    for (const e of entries) scheduler.enqueue({ ...e, nextAttemptAt: start });
    scheduler.start();
    for (let t = 0; t < 200 && sentAt.length < 90; t++) await vi.advanceTimersByTimeAsync(1000);
    expect(sentAt).toHaveLength(90);
    // Never more than 30 in any 60-second window...
    for (let i = 30; i < sentAt.length; i++) expect((sentAt[i] as number) - (sentAt[i - 30] as number)).toBeGreaterThanOrEqual(60_000);
    // ...and no slower than needed: the 90th leaves two minutes after the first.
    expect(sentAt[89]).toBe(120_000);
    await scheduler.stop(1000);
    vi.useRealTimers();
    // Its journal's file handles are closed here, not by the garbage collector (Node warns of those).
    await spool.close();
  });
});
