import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AttemptResult } from '../../src/delivery/attempt.js';
import { Scheduler } from '../../src/delivery/scheduler.js';
import { silentLogger } from '../../src/log.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import { STANDBY_READ_AHEAD_BYTES } from '../../src/spool/spool.js';
import { FsSpool } from '../../src/spool/fs/fs-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import { until } from '../helpers/wait.js';

let dir: string;
let spool: FsSpool;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-sched-'));
  spool = new FsSpool(dir);
  await spool.recover();
});
afterEach(async () => {
  // Its journal's file handles are closed here, not by the garbage collector (Node warns of those).
  await spool.close();
  await rm(dir, { recursive: true, force: true });
});

async function queued(mailbox: string, receivedAt = Date.now()): Promise<SpoolEntry> {
  const id = newQueueId();
  const writer = await spool.beginMessage(id);
  await writer.write(Buffer.from('Subject: x\r\n\r\nx\r\n'));
  return writer.commit({ id, receivedAt, envelope: { mailFrom: 'a@x', rcptTo: ['b@x'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox });
}


const options = { maxInFlightPerMailbox: 4, backoff: { minMs: 20, maxMs: 100 }, maxQueueLifetimeMs: 60_000 };

describe('scheduler', () => {
  it('keeps at most 4 attempts in flight per mailbox while other mailboxes proceed', async () => {
    const inFlight = new Map<string, number>();
    const peak = new Map<string, number>();
    let release: () => void = () => undefined;
    let gate = new Promise<void>((r) => (release = r));
    let done = 0;
    const scheduler = new Scheduler(options, {
      spool,
      clock: { now: Date.now },
      logger: silentLogger(),
      attempt: async (entry): Promise<AttemptResult> => {
        inFlight.set(entry.mailbox, (inFlight.get(entry.mailbox) ?? 0) + 1);
        peak.set(entry.mailbox, Math.max(peak.get(entry.mailbox) ?? 0, inFlight.get(entry.mailbox) ?? 0));
        await gate;
        inFlight.set(entry.mailbox, (inFlight.get(entry.mailbox) ?? 0) - 1);
        done += 1;
        return { decision: { action: 'delivered' } };
      },
    });
    for (let i = 0; i < 10; i++) scheduler.enqueue(await queued('a@x'));
    for (let i = 0; i < 3; i++) scheduler.enqueue(await queued('b@x'));
    scheduler.start();
    await until(() => (inFlight.get('a@x') ?? 0) === 4 && (inFlight.get('b@x') ?? 0) === 3);
    const opened = gate;
    gate = Promise.resolve();
    release();
    await opened;
    await until(() => done === 13);
    expect(peak.get('a@x')).toBe(4);
    expect(peak.get('b@x')).toBe(3);
    // Delivered messages are removed after the attempt (once their journal segment is deleted).
    await until(async () => (await spool.list('queue')).length === 0);
  });

  it('pauses a mailbox for Retry-After: no attempt starts before it has passed', async () => {
    const starts: number[] = [];
    let first = true;
    const scheduler = new Scheduler(options, {
      spool,
      clock: { now: Date.now },
      logger: silentLogger(),
      attempt: async (): Promise<AttemptResult> => {
        starts.push(Date.now());
        if (first) {
          first = false;
          return { decision: { action: 'retry', kind: 'transient', reason: 'HTTP 429', retryAfterMs: 300, pauseMailbox: true }, status: 429 };
        }
        return { decision: { action: 'delivered' } };
      },
    });
    scheduler.enqueue(await queued('a@x'));
    scheduler.start();
    await until(() => starts.length === 1);
    const throttledAt = Date.now();
    scheduler.enqueue(await queued('a@x'));
    scheduler.enqueue(await queued('a@x'));
    await until(() => starts.length === 4);
    for (const start of starts.slice(1)) expect(start).toBeGreaterThanOrEqual(throttledAt + 300 - 15);
    const [entry] = await spool.list('queue');
    expect(entry).toBeUndefined();
  });

  it('never shortens a pause: a shorter Retry-After (503) or a network error after a 429 leaves it in force', async () => {
    const results: AttemptResult[] = [
      { decision: { action: 'retry', kind: 'transient', reason: 'HTTP 429', retryAfterMs: 600, pauseMailbox: true }, status: 429 },
      { decision: { action: 'retry', kind: 'transient', reason: 'HTTP 503', retryAfterMs: 50, pauseMailbox: true }, status: 503 },
      { decision: { action: 'retry', kind: 'transient', reason: 'network error: ECONNRESET', retryAfterMs: null, pauseMailbox: false } },
    ];
    const starts: number[] = [];
    let throttledAt = 0;
    let release: () => void = () => undefined;
    const firstThree = new Promise<void>((r) => (release = r));
    const scheduler = new Scheduler(options, {
      spool,
      clock: { now: Date.now },
      logger: silentLogger(),
      attempt: async (): Promise<AttemptResult> => {
        starts.push(Date.now());
        const result = results.shift();
        if (!result) return { decision: { action: 'delivered' } };
        if (results.length === 0) release();
        // The three answers arrive in order (429 first), while all three are in flight.
        await firstThree;
        await new Promise((r) => setTimeout(r, 5 * (3 - results.length)));
        if (result.status === 429) throttledAt = Date.now();
        return result;
      },
    });
    for (let i = 0; i < 3; i++) scheduler.enqueue(await queued('a@x'));
    scheduler.start();
    await until(() => starts.length === 6, 5000);
    const pause = scheduler.pausedUntil('a@x');
    expect(pause).toBeGreaterThanOrEqual(throttledAt + 600);
    for (const start of starts.slice(3)) expect(start).toBeGreaterThanOrEqual(pause);
  });

  it('records attempts and the last error on disk when deferring, then moves expired mail to failed/', async () => {
    const scheduler = new Scheduler(
      { ...options, maxQueueLifetimeMs: 1000 },
      {
        spool,
        clock: { now: Date.now },
        logger: silentLogger(),
        attempt: async (): Promise<AttemptResult> => ({ decision: { action: 'retry', kind: 'transient', reason: 'HTTP 503', retryAfterMs: null, pauseMailbox: false }, status: 503, requestId: 'r-9' }),
      },
    );
    const fresh = await queued('a@x');
    const old = await queued('b@x', Date.now() - 5000);
    scheduler.enqueue(fresh);
    scheduler.enqueue(old);
    scheduler.start();
    const deadline = Date.now() + 5000;
    while ((await spool.list('failed')).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await scheduler.stop(1000);
    const failed = await spool.list('failed');
    expect(failed.map((e) => e.id)).toEqual([old.id]);
    expect(failed[0]?.failReason).toMatch(/queue lifetime of \dh exceeded; last error: HTTP 503/);
    const waiting = await spool.get(fresh.id);
    expect(waiting?.attempts).toBeGreaterThanOrEqual(1);
    expect(waiting?.lastError).toMatchObject({ kind: 'transient', message: 'HTTP 503', status: 503, requestId: 'r-9' });
  });

  it('reads the next messages ahead while every slot of their mailbox is busy, and starts them from those bytes', async () => {
    const reads: string[] = [];
    const readMessage = spool.readMessage.bind(spool);
    spool.readMessage = async (id: string) => (reads.push(id), readMessage(id));
    const finishers = new Map<string, () => void>();
    const given = new Map<string, Buffer | null>();
    const scheduler = new Scheduler(options, {
      spool,
      clock: { now: Date.now },
      logger: silentLogger(),
      attempt: async (entry, promoted): Promise<AttemptResult> => {
        given.set(entry.id, promoted?.content ? await promoted.content : null);
        await new Promise<void>((resolve) => finishers.set(entry.id, resolve));
        return { decision: { action: 'delivered' } };
      },
    });
    const entries: SpoolEntry[] = [];
    for (let i = 0; i < 6; i++) entries.push(await queued('a@x'));
    // A large message is not held in memory ahead of its slot.
    const id = newQueueId();
    const writer = await spool.beginMessage(id);
    await writer.write(Buffer.alloc(STANDBY_READ_AHEAD_BYTES + 1, 120));
    const large = await writer.commit({ id, receivedAt: Date.now(), envelope: { mailFrom: 'a@x', rcptTo: ['b@x'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: 'a@x' });
    // Another mailbox with a free slot reads nothing ahead.
    const other = await queued('b@x');
    for (const e of [...entries, large, other]) scheduler.enqueue(e);
    scheduler.start();
    try {
      await until(() => finishers.size === 5);
      const [first, , , , fifth, sixth] = entries.map((e) => e.id);
      await until(() => reads.includes(fifth as string) && reads.includes(sixth as string));
      expect(reads).not.toContain(large.id);
      expect(reads).not.toContain(other.id);
      expect(given.get(first as string)).toBeNull();
      // A slot frees: the fifth starts from the bytes read ahead, not read again.
      finishers.get(first as string)?.();
      await until(() => given.has(fifth as string));
      expect(given.get(fifth as string)?.toString()).toBe('Subject: x\r\n\r\nx\r\n');
      expect(reads.filter((r) => r === fifth)).toHaveLength(1);
    } finally {
      for (const finish of finishers.values()) finish();
      await until(() => finishers.size === 8);
      for (const finish of finishers.values()) finish();
      await scheduler.stop(1000);
    }
  });
});
