/**
 * The clean-up of given-up drafts over a store that can fail or lose track (delivery/draft-cleanup.ts):
 * a shared store's record never written is written when its slot is asked for, a draft another relay
 * took over is left to it, and a store that cannot be written (the database away) neither crashes
 * the relay nor loses the draft.
 */
import { describe, expect, it } from 'vitest';
import { DraftCleanup, type DraftRecord } from '../../src/delivery/draft-cleanup.js';
import type { GraphOutcome } from '../../src/graph/graph-call.js';
import type { DraftStore } from '../../src/spool/spool.js';
import { captureLogger } from '../helpers/harness.js';
import { until } from '../helpers/wait.js';

type Slot = 'taken' | 'busy' | 'missing' | 'other';

/** A shared store in memory whose answers a test scripts. */
class ScriptedStore implements DraftStore {
  rows = new Map<string, DraftRecord>();
  slots: Slot[] = [];
  failWrites = 0;
  failDrops = 0;
  readonly calls: string[] = [];
  async load(): Promise<DraftRecord[]> {
    return [];
  }
  async put(record: DraftRecord): Promise<void> {
    this.calls.push(`put ${record.draftId} ${record.state}`);
    if (this.failWrites > 0 && this.failWrites--) throw new Error('connection terminated');
    this.rows.set(record.draftId, { ...record });
  }
  async drop(draftId: string): Promise<void> {
    this.calls.push(`drop ${draftId}`);
    if ((this.failWrites > 0 && this.failWrites--) || (this.failDrops > 0 && this.failDrops--)) throw new Error('connection terminated');
    this.rows.delete(draftId);
  }
  async takeSlot(draftId: string): Promise<Slot> {
    this.calls.push(`take ${draftId}`);
    return this.slots.shift() ?? (this.rows.has(draftId) ? 'taken' : 'missing');
  }
  async releaseSlot(draftId: string): Promise<void> {
    this.calls.push(`release ${draftId}`);
  }
}

function cleanupOver(store: DraftStore, answer: () => GraphOutcome) {
  const log = captureLogger();
  const deletes: string[] = [];
  const deps = {
    clock: { now: () => Date.now() },
    logger: log.logger,
    mailboxes: { pausedUntil: () => 0, pause: () => undefined, tryAcquire: () => true, release: () => undefined },
    backoff: { minMs: 20, maxMs: 40 },
    deleteDraft: async (record: DraftRecord) => (deletes.push(record.draftId), answer()),
  };
  return { deps, deletes, log };
}

/** A draft given up by its attempt (created, then discarded), as the large-message path does (discard starts its deletion). */
async function giveUp(cleanup: DraftCleanup, draftId: string): Promise<void> {
  const tracker = cleanup.trackerFor('Q1', 'relay@x.example');
  await tracker.created(draftId);
  await tracker.discard();
}

describe('draft clean-up over a store', () => {
  it('writes a record the store never got (the database was away when the draft was made), then deletes the draft', async () => {
    const store = new ScriptedStore();
    const { deps, deletes } = cleanupOver(store, () => ({ kind: 'http', status: 204, retryAfterMs: null }));
    const cleanup = await DraftCleanup.open(store, deps);
    store.failWrites = 2; // created and discard both fail to reach the store
    const tracker = cleanup.trackerFor('Q1', 'relay@x.example');
    await expect(tracker.created('AAMkD1')).rejects.toThrow(/terminated/);
    await expect(tracker.discard()).rejects.toThrow(/terminated/);
    cleanup.start();
    try {
      await until(() => deletes.includes('AAMkD1') && cleanup.pending.length === 0, 5_000);
      expect(store.calls).toContain('put AAMkD1 delete');
      expect(store.rows.size).toBe(0);
    } finally {
      await cleanup.stop();
    }
  });

  it('leaves a draft another relay took over to that relay', async () => {
    const store = new ScriptedStore();
    const { deps, deletes } = cleanupOver(store, () => ({ kind: 'http', status: 204, retryAfterMs: null }));
    const cleanup = await DraftCleanup.open(store, deps);
    store.slots = ['other'];
    await giveUp(cleanup, 'AAMkD2');
    cleanup.start();
    try {
      await until(() => cleanup.pending.length === 0, 5_000);
      expect(deletes).toEqual([]);
      expect(store.rows.has('AAMkD2')).toBe(true); // still the other relay's record
    } finally {
      await cleanup.stop();
    }
  });

  it('survives a store that cannot be written after the DELETE answered, and forgets the draft only once it could', async () => {
    const store = new ScriptedStore();
    let answers = 0;
    const { deps, deletes, log } = cleanupOver(store, () => (answers++ === 0 ? { kind: 'http', status: 204, retryAfterMs: null } : { kind: 'http', status: 404, retryAfterMs: null }));
    const cleanup = await DraftCleanup.open(store, deps);
    store.failDrops = 1; // the drop after the first DELETE fails
    const crashes: unknown[] = [];
    const onUnhandled = (reason: unknown) => crashes.push(reason);
    process.on('unhandledRejection', onUnhandled);
    await giveUp(cleanup, 'AAMkD3');
    cleanup.start();
    try {
      await until(() => cleanup.pending.length === 0, 5_000);
      // Tried again: the second DELETE finds it gone (404), and this time the record is dropped.
      expect(deletes).toEqual(['AAMkD3', 'AAMkD3']);
      expect(store.rows.size).toBe(0);
      expect(log.records.map((r) => r.event)).toContain('draft.record_failed');
      await new Promise((r) => setTimeout(r, 20));
      expect(crashes).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await cleanup.stop();
    }
  });
});
