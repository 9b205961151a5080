/**
 * A slot's hand-over on a shared spool (claim-loop.ts untilLeaving): when a request ends and a
 * standby message of the mailbox takes its slot, the ended request's outcome is written to the
 * database only once the standby's request is being written, so the database's work for it does not
 * delay that request; and no later than HANDOVER_WAIT_MS when the standby's request cannot leave
 * (its token is being fetched), so the outcome of a request already answered is never held back.
 */
import { describe, expect, it } from 'vitest';
import type { AttemptResult } from '../../src/delivery/attempt.js';
import { ClaimLoop } from '../../src/delivery/claim-loop.js';
import type { PromotedStandby } from '../../src/delivery/scheduler.js';
import { silentLogger } from '../../src/log.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import type { Lease, Spool } from '../../src/spool/spool.js';
import { until } from '../helpers/wait.js';

const mailbox = 'alerts@x.example';
const entry = (id: string): SpoolEntry =>
  ({ id, mailbox, receivedAt: 0, size: 10, attempts: 0, nextAttemptAt: 0, envelope: { mailFrom: 'a@x.example', rcptTo: ['b@x.example'] }, client: { address: '127.0.0.1', helo: 'h' } }) as unknown as SpoolEntry;

const delivered = { decision: { action: 'delivered' } } as AttemptResult;

/** One claim hands out a slot (m1) and a standby (s1); every outcome written is logged in `events`. */
function handOverSpool(events: string[]) {
  const leases: Lease[] = [
    { entry: entry('m1'), token: 't1' },
    { entry: entry('s1'), token: 'ts1', standby: true, content: Buffer.from('x') },
  ];
  return {
    subscribe: () => () => undefined,
    hearsOthersNow: () => true,
    claim: async () => leases.splice(0),
    renew: async () => true,
    settle: async (lease: Lease) => (events.push(`settled ${lease.entry.id}`), true),
    settleAndClaim: async (lease: Lease) => (events.push(`settled ${lease.entry.id}`), { held: true, next: [], standby: [] }),
    pauseMailbox: async () => undefined,
    readMessage: async () => Buffer.from('x'),
  } as unknown as Spool;
}

/**
 * m1 (claimed) ends when `endFirst` is called; the promoted s1 runs `promotedAttempt`. `handOverWaitMs`:
 * how long an outcome may wait for the promoted request (the loop's own bound unless given).
 */
function loopWith(events: string[], promotedAttempt: (promoted: PromotedStandby) => Promise<AttemptResult>, handOverWaitMs?: number) {
  let endFirst: () => void = () => undefined;
  /** What each attempt was told about itself (a promoted standby or not). */
  const given = new Map<string, PromotedStandby | undefined>();
  const loop = new ClaimLoop(
    { maxInFlightPerMailbox: 4, backoff: { minMs: 20, maxMs: 100 }, maxQueueLifetimeMs: 60_000, leaseMs: 30_000, node: 'node-a', ...(handOverWaitMs ? { handOverWaitMs } : {}) },
    {
      spool: handOverSpool(events),
      clock: { now: () => Date.now() },
      logger: silentLogger(),
      attempt: (e, promoted) => {
        events.push(`attempt ${e.id}`);
        given.set(e.id, promoted);
        if (e.id === 'm1') return new Promise<AttemptResult>((resolve) => (endFirst = () => resolve(delivered)));
        return promotedAttempt(promoted as PromotedStandby);
      },
    },
  );
  return { loop, given, endFirst: () => endFirst() };
}

describe('claim loop: a slot handed to a standby message', () => {
  it("records the ended request's outcome only after the promoted request is being written", async () => {
    const events: string[] = [];
    let leave: () => void = () => undefined;
    let finish: () => void = () => undefined;
    const { loop, given, endFirst } = loopWith(events, (promoted) => {
      leave = () => {
        events.push('s1 leaving');
        promoted.leaving?.();
      };
      return new Promise<AttemptResult>((resolve) => (finish = () => resolve(delivered)));
    }, 60_000);
    loop.start();
    try {
      await until(() => loop.isInFlight('m1'), 5_000);
      endFirst();
      await until(() => events.includes('attempt s1'), 5_000);
      // Its token and bytes are ready, its connection not yet: m1's outcome waits (the bound is a minute here).
      await new Promise((r) => setTimeout(r, 100));
      expect(events).not.toContain('settled m1');
      leave();
      await until(() => events.includes('settled m1'), 5_000);
      expect(events.indexOf('s1 leaving')).toBeLessThan(events.indexOf('settled m1'));
      // A claimed message is not a promoted standby: it reads the shared pause first (app.ts).
      expect(given.get('m1')).toBeUndefined();
      expect(given.get('s1')?.leaving).toBeTypeOf('function');
    } finally {
      finish();
      await loop.stop(1_000);
    }
  });

  it('records it anyway, within a bounded wait, when the promoted request cannot leave', async () => {
    const events: string[] = [];
    let finish: () => void = () => undefined;
    // The promoted attempt waits (a token being fetched) and never writes its request meanwhile.
    const { loop, endFirst } = loopWith(events, () => new Promise<AttemptResult>((resolve) => (finish = () => resolve(delivered))));
    loop.start();
    try {
      await until(() => loop.isInFlight('m1'), 5_000);
      endFirst();
      // Written while the promoted attempt still waits (it would never be, were the wait unbounded).
      await until(() => events.includes('settled m1'), 2_000);
      expect(loop.isInFlight('s1')).toBe(true);
    } finally {
      finish();
      await loop.stop(1_000);
    }
  });

  it('records it as soon as the promoted attempt ends without a request (held back by a pause)', async () => {
    const events: string[] = [];
    let endPromoted: () => void = () => undefined;
    const { loop, endFirst } = loopWith(
      events,
      () => new Promise<AttemptResult>((resolve) => (endPromoted = () => resolve({ decision: { action: 'postpone', untilMs: Date.now() + 60_000 } } as AttemptResult))),
      60_000,
    );
    loop.start();
    try {
      await until(() => loop.isInFlight('m1'), 5_000);
      endFirst();
      await until(() => events.includes('attempt s1'), 5_000);
      expect(events).not.toContain('settled m1');
      // Nothing left, and nothing will: m1's outcome does not wait for the (minute-long) bound.
      endPromoted();
      await until(() => events.includes('settled m1'), 5_000);
    } finally {
      await loop.stop(1_000);
    }
  });
});
