/**
 * Which attempts on a shared spool read the mailbox's pause from the database right before their
 * request (claim-loop.ts readsPauseFirst), and what a node does when its notifications resume after
 * a gap: the pauses said meanwhile were missed, so it reads them for every mailbox it sends to.
 */
import { describe, expect, it } from 'vitest';
import type { AttemptResult } from '../../src/delivery/attempt.js';
import { ClaimLoop } from '../../src/delivery/claim-loop.js';
import { silentLogger } from '../../src/log.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import type { Lease, Spool, SpoolEvent } from '../../src/spool/spool.js';
import { until } from '../helpers/wait.js';

const entry = (id: string, mailbox: string): SpoolEntry =>
  ({ id, mailbox, receivedAt: 0, size: 10, attempts: 0, nextAttemptAt: 0, envelope: { mailFrom: 'a@x.example', rcptTo: ['b@x.example'] }, client: { address: '127.0.0.1', helo: 'h' } }) as unknown as SpoolEntry;

/** The parts of a shared spool the claim loop uses, in memory: one claim hands out `leases`. */
function sharedSpool(leases: Lease[]) {
  let handler: ((event: SpoolEvent) => void) | null = null;
  const pauseReads: string[] = [];
  const state = { hearing: true, pausedUntil: 0 };
  const spool = {
    subscribe: (h: (event: SpoolEvent) => void) => ((handler = h), () => (handler = null)),
    hearsOthersNow: () => state.hearing,
    mailboxPausedUntil: async (mailbox: string) => (pauseReads.push(mailbox), state.pausedUntil),
    claim: async () => leases.splice(0),
    renew: async () => true,
    settle: async () => true,
    pauseMailbox: async () => undefined,
  } as unknown as Spool;
  return { spool, state, pauseReads, emit: (event: SpoolEvent) => handler?.(event) };
}

const loopOn = (spool: Spool, attempt: () => Promise<AttemptResult>) =>
  new ClaimLoop({ maxInFlightPerMailbox: 4, backoff: { minMs: 20, maxMs: 100 }, maxQueueLifetimeMs: 60_000, leaseMs: 30_000, node: 'node-a' }, { spool, attempt, clock: { now: () => Date.now() }, logger: silentLogger() });

describe('claim loop: the shared pause', () => {
  it('reads the pause first for claimed messages always, for a promoted standby only while notifications do not flow', () => {
    const { spool, state } = sharedSpool([]);
    const loop = loopOn(spool, async () => ({ decision: { action: 'deliver' } }) as unknown as AttemptResult);
    expect(loop.readsPauseFirst(false)).toBe(true);
    expect(loop.readsPauseFirst(true)).toBe(false);
    state.hearing = false;
    expect(loop.readsPauseFirst(true)).toBe(true);
    expect(loop.readsPauseFirst(false)).toBe(true);
  });

  it('reads the pause of every mailbox it sends to when notifications resume after a gap, and honours it', async () => {
    const { spool, state, pauseReads, emit } = sharedSpool([{ entry: entry('m1', 'alerts@x.example'), token: 't1' }]);
    let finish: (r: AttemptResult) => void = () => undefined;
    const loop = loopOn(spool, () => new Promise<AttemptResult>((resolve) => (finish = resolve)));
    loop.start();
    try {
      await until(() => loop.isInFlight('m1'), 5_000);
      expect(pauseReads).toEqual([]);
      // Another node paused the mailbox while this node's LISTEN connection was down.
      state.pausedUntil = Date.now() + 60_000;
      emit({ kind: 'heard' });
      await until(() => loop.pausedUntil('alerts@x.example') > Date.now(), 5_000);
      expect(pauseReads).toEqual(['alerts@x.example']);
    } finally {
      finish({ decision: { action: 'postpone', untilMs: 0 } });
      await loop.stop(1_000);
    }
  });
});

describe('claim loop: no claim while this node fills the mailbox', () => {
  it('claims nothing for new mail or a wake of a mailbox whose every slot it holds, and claims again once one is free', async () => {
    const mailbox = 'alerts@x.example';
    const { spool, emit } = sharedSpool(Array.from({ length: 4 }, (_, i) => ({ entry: entry(`m${i}`, mailbox), token: `t${i}` })));
    let claims = 0;
    const inner = spool.claim.bind(spool);
    (spool as { claim: Spool['claim'] }).claim = async (...args) => ((claims += 1), inner(...args));
    const finishers: Array<(r: AttemptResult) => void> = [];
    const loop = loopOn(spool, () => new Promise<AttemptResult>((resolve) => finishers.push(resolve)));
    loop.start();
    try {
      await until(() => finishers.length === 4, 5_000);
      await new Promise((r) => setTimeout(r, 50));
      const before = claims;
      // Every slot of the mailbox is this node's: each passes itself on when it ends.
      loop.enqueue(entry('m9', mailbox));
      emit({ kind: 'wake', mailbox });
      await new Promise((r) => setTimeout(r, 50));
      expect(claims).toBe(before);
      // New mail for another mailbox, or a wake naming none, still claims.
      loop.enqueue(entry('n1', 'other@x.example'));
      await until(() => claims === before + 1, 5_000);
      emit({ kind: 'wake', mailbox: null });
      await until(() => claims === before + 2, 5_000);
      // A slot ends (nothing is handed over by this spool): the node claims for the mailbox again.
      finishers.shift()?.({ decision: { action: 'postpone', untilMs: 0 } } as unknown as AttemptResult);
      await until(() => !loop.isInFlight('m0'), 5_000);
      await new Promise((r) => setTimeout(r, 50));
      const after = claims;
      loop.enqueue(entry('m10', mailbox));
      await until(() => claims === after + 1, 5_000);
    } finally {
      for (const finish of finishers.splice(0)) finish({ decision: { action: 'postpone', untilMs: 0 } } as unknown as AttemptResult);
      await loop.stop(1_000);
    }
  });
});
