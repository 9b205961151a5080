/**
 * Drafts the large-message path created and gave up, deleted when the mailbox may be called: a
 * DELETE counts against the mailbox's limits like any request, so it waits for a Retry-After pause
 * and takes one of the mailbox's in-flight slots (graph-api-facts §9, Graph's throttling guidance;
 * issue 12, item 1). Every draft is recorded before anything else happens to it (a file beside
 * the spool, or on a shared spool the database, where another relay takes over the drafts of one
 * that died for good), so after a crash or a restart the drafts of unfinished attempts are still
 * deleted: nothing is left behind in the sending mailbox's Drafts folder.
 */
import type { GraphOutcome } from '../graph/graph-call.js';
import { isHeld } from '../graph/graph-call.js';
import type { DraftTracker, LargeProgress } from '../graph/large-message.js';
import type { Logger } from '../log.js';
import type { DraftRecord, DraftStore } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { backoffDelayMs, type BackoffPolicy } from './backoff.js';

export type { DraftRecord } from '../spool/spool.js';

/** The per-mailbox pause and in-flight slots, shared with deliveries (scheduler.ts). */
export interface MailboxGate {
  pausedUntil(mailbox: string): number;
  pause(mailbox: string, untilMs: number): void;
  tryAcquire(mailbox: string): boolean;
  release(mailbox: string): void;
}

export interface DraftCleanupDeps {
  clock: Clock;
  logger: Logger;
  mailboxes: MailboxGate;
  backoff: BackoffPolicy;
  /** Sends the DELETE (token and client of the record's profile); `mayStart` is checked as it leaves. */
  deleteDraft(record: DraftRecord, mayStart: () => boolean): Promise<GraphOutcome>;
}

/** How often to look again when every slot of the mailbox is busy with deliveries. */
const SLOT_POLL_MS = 250;

export class DraftCleanup {
  private readonly records = new Map<string, DraftRecord>();
  private readonly progress = new Map<string, LargeProgress>();
  private readonly running = new Map<string, Promise<void>>();
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  private constructor(
    private readonly store: DraftStore,
    private readonly deps: DraftCleanupDeps,
  ) {}

  /** Loads the records; drafts an earlier run was still building are given up (their upload sessions lived in that process). */
  static async open(store: DraftStore, deps: DraftCleanupDeps): Promise<DraftCleanup> {
    const cleanup = new DraftCleanup(store, deps);
    const resumed = cleanup.adopt(await store.load());
    if (resumed > 0) deps.logger.info({ event: 'draft.cleanup_resumed', drafts: resumed }, 'drafts left by the previous run are queued for deletion');
    return cleanup;
  }

  /** Takes records to delete (left by an earlier run, or taken over from another relay); how many were new. */
  private adopt(records: readonly DraftRecord[]): number {
    let added = 0;
    for (const r of records) {
      if (this.records.has(r.draftId)) continue;
      this.records.set(r.draftId, { ...r, state: 'delete', retryAt: 0 });
      added += 1;
    }
    return added;
  }

  /** Drafts waiting for deletion or in use, for tests and `queue` output. */
  get pending(): DraftRecord[] {
    return [...this.records.values()].map((r) => ({ ...r }));
  }

  start(): void {
    this.stopped = false;
    this.pump();
    const every = this.store.intervalMs;
    if (this.store.heartbeat && every) {
      this.heartbeatTimer = setInterval(() => void this.heartbeat(), every);
      this.heartbeatTimer.unref();
    }
  }

  /** Keeps this relay's drafts held in a shared store and takes over those of relays that stopped. */
  private async heartbeat(): Promise<void> {
    try {
      const taken = this.adopt((await this.store.heartbeat?.()) ?? []);
      if (taken === 0) return;
      this.deps.logger.info({ event: 'draft.cleanup_taken_over', drafts: taken }, "drafts of a relay that stopped holding them are queued for deletion here");
      this.pump();
    } catch (err) {
      // The database is away: the relay's readiness says so; the next beat tries again.
      this.deps.logger.warn({ event: 'draft.heartbeat_failed', err: (err as Error).message }, 'the drafts this relay holds could not be renewed; retrying');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    await Promise.allSettled([...this.running.values()]);
    await this.writing;
  }

  /** The draft tracker of one queued message for one attempt. */
  trackerFor(queueId: string, mailbox: string, graphProfile?: string): DraftTracker {
    const building = () => [...this.records.values()].find((r) => r.queueId === queueId && r.state === 'building');
    return {
      current: () => (building() ? (this.progress.get(queueId) ?? null) : null),
      created: async (draftId) => {
        const record: DraftRecord = { draftId, mailbox, ...(graphProfile ? { graphProfile } : {}), queueId, state: 'building', since: this.deps.clock.now(), attempts: 0, retryAt: 0 };
        this.records.set(draftId, record);
        await this.persist(record);
      },
      progress: (p) => void this.progress.set(queueId, p),
      discard: () => this.discard(queueId),
      sent: async () => {
        this.progress.delete(queueId);
        const record = building();
        if (!record) return;
        await this.forget(record.draftId);
      },
    };
  }

  /** Gives up the draft a message was building (a permanent failure, an operator deleting it). */
  async discard(queueId: string): Promise<void> {
    this.progress.delete(queueId);
    const record = [...this.records.values()].find((r) => r.queueId === queueId && r.state === 'building');
    if (!record) return;
    record.state = 'delete';
    record.retryAt = 0;
    await this.persist(record);
    this.deps.logger.info({ event: 'draft.discarded', queueId, mailbox: record.mailbox, draftId: record.draftId }, 'draft queued for deletion');
    this.pump();
  }

  /** Drops a draft from the store, then from memory: a failed drop leaves it to be tried again (a DELETE answers 404 then). */
  private async forget(draftId: string): Promise<void> {
    await this.persist(draftId);
    this.records.delete(draftId);
  }

  /** Records a draft's new state, or (given its id) that it is gone; writes go one after the other. */
  private persist(change: DraftRecord | string): Promise<void> {
    const all = [...this.records.values()].filter((r) => r.draftId !== change).map((r) => ({ ...r }));
    let write: () => Promise<void>;
    if (typeof change === 'string') {
      write = () => this.store.drop(change, all);
    } else {
      const record = { ...change };
      write = () => this.store.put(record, all);
    }
    // A failed write fails its caller (the attempt, the clean-up) but not the ones after it.
    const result = this.writing.then(write);
    this.writing = result.catch(() => undefined);
    return result;
  }

  private pump(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const now = this.deps.clock.now();
    let wakeAt = Infinity;
    for (const record of this.records.values()) {
      if (record.state !== 'delete' || this.running.has(record.draftId)) continue;
      const notBefore = Math.max(record.retryAt, this.deps.mailboxes.pausedUntil(record.mailbox));
      if (notBefore > now) {
        wakeAt = Math.min(wakeAt, notBefore);
        continue;
      }
      if (!this.deps.mailboxes.tryAcquire(record.mailbox)) {
        wakeAt = Math.min(wakeAt, now + SLOT_POLL_MS);
        continue;
      }
      const run = this.deleteOne(record)
        // A store that cannot be written (the database away): the record stays and is tried again.
        .catch((err: Error) => {
          record.retryAt = this.deps.clock.now() + backoffDelayMs(Math.max(1, record.attempts), this.deps.backoff);
          this.deps.logger.warn({ event: 'draft.record_failed', queueId: record.queueId, mailbox: record.mailbox, draftId: record.draftId, err: err.message }, 'the record of a draft could not be written; its deletion is tried again');
        })
        .finally(() => {
          this.running.delete(record.draftId);
          this.deps.mailboxes.release(record.mailbox);
          this.pump();
        });
      this.running.set(record.draftId, run);
    }
    if (wakeAt !== Infinity) {
      this.timer = setTimeout(() => this.pump(), Math.max(0, wakeAt - now));
      this.timer.unref();
    }
  }

  private async deleteOne(record: DraftRecord): Promise<void> {
    const { clock } = this.deps;
    // On a shared store the DELETE also holds one of the mailbox's slots in the database, counted
    // with every relay's deliveries; when they are all taken, look again in a moment.
    if (this.store.takeSlot) {
      const slot = await this.store.takeSlot(record.draftId);
      if (slot === 'missing') {
        // Its row was never written (the database was away then): written now, the slot asked next time.
        await this.persist(record);
        record.retryAt = clock.now() + SLOT_POLL_MS;
        return;
      }
      if (slot === 'other') {
        // Another relay took it over while this one could not renew its hold: it deletes the draft.
        this.records.delete(record.draftId);
        return;
      }
      if (slot !== 'taken') {
        record.retryAt = clock.now() + SLOT_POLL_MS;
        return;
      }
    }
    let slotGivenBack = false;
    try {
      slotGivenBack = await this.sendDelete(record);
    } finally {
      if (!slotGivenBack && this.store.releaseSlot) await this.store.releaseSlot(record.draftId).catch(() => undefined);
    }
  }

  /** The DELETE and what follows from its answer; true when the store has given the slot back (the record dropped or rewritten). */
  private async sendDelete(record: DraftRecord): Promise<boolean> {
    const { clock, logger, mailboxes } = this.deps;
    const mayStart = () => mailboxes.pausedUntil(record.mailbox) <= clock.now();
    let outcome: GraphOutcome;
    try {
      outcome = await this.deps.deleteDraft(record, mayStart);
    } catch (err) {
      outcome = { kind: 'network', message: (err as Error).message };
    }
    const now = clock.now();
    if (isHeld(outcome)) return false; // the mailbox was paused meanwhile: pump() waits for the pause
    // 404: already gone (sent after all, or deleted by someone): nothing left to clean up.
    if (outcome.kind === 'http' && (outcome.status < 300 || outcome.status === 404)) {
      await this.forget(record.draftId);
      logger.info({ event: 'draft.deleted', queueId: record.queueId, mailbox: record.mailbox, draftId: record.draftId, status: outcome.status }, 'draft deleted');
      return true;
    }
    record.attempts += 1;
    const retryAfterMs = outcome.kind === 'http' ? outcome.retryAfterMs : null;
    record.retryAt = retryAfterMs !== null ? now + retryAfterMs : now + backoffDelayMs(record.attempts, this.deps.backoff);
    // A Retry-After on the clean-up request pauses the mailbox for deliveries too: same limits.
    if (outcome.kind === 'http' && retryAfterMs !== null && (outcome.status === 429 || outcome.status >= 500)) mailboxes.pause(record.mailbox, record.retryAt);
    await this.persist(record);
    const why = outcome.kind === 'http' ? `HTTP ${outcome.status}${outcome.code ? ` ${outcome.code}` : ''}` : `network error: ${outcome.code ?? ''} ${outcome.message}`.trim();
    logger.warn({ event: 'draft.delete_deferred', queueId: record.queueId, mailbox: record.mailbox, draftId: record.draftId, reason: why, retryInMs: record.retryAt - now }, 'draft deletion deferred');
    return true; // put cleared the slot with the new state
  }
}
