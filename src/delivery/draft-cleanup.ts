/**
 * Drafts the large-message path created and gave up, deleted when the mailbox may be called: a
 * DELETE counts against the mailbox's limits like any request, so it waits for a Retry-After pause
 * and takes one of the mailbox's in-flight slots (graph-api-facts §9, Graph's throttling guidance;
 * issue 12, item 1). Every draft is recorded in a small file before anything else happens to it,
 * so after a crash or a restart the drafts of unfinished attempts are still deleted: nothing is
 * left behind in the sending mailbox's Drafts folder.
 */
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { GraphOutcome } from '../graph/graph-call.js';
import { isHeld } from '../graph/graph-call.js';
import type { DraftTracker, LargeProgress } from '../graph/large-message.js';
import type { Logger } from '../log.js';
import type { Clock } from '../util/clock.js';
import { backoffDelayMs, type BackoffPolicy } from './backoff.js';

export interface DraftRecord {
  draftId: string;
  mailbox: string;
  graphProfile?: string;
  queueId: string;
  /** building: an attempt is using it; delete: waiting for its DELETE. */
  state: 'building' | 'delete';
  since: number;
  attempts: number;
  retryAt: number;
}

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
  private stopped = false;

  private constructor(
    private readonly file: string,
    private readonly deps: DraftCleanupDeps,
  ) {}

  /** Loads the record; drafts an earlier run was still building are given up (their upload sessions lived in that process). */
  static async open(file: string, deps: DraftCleanupDeps): Promise<DraftCleanup> {
    const cleanup = new DraftCleanup(file, deps);
    // With spool.backend: postgres nothing else creates spool.dir, and a draft that cannot be
    // recorded fails its attempt (the large path records a draft before anything else happens to it).
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    let stored: DraftRecord[] = [];
    try {
      stored = JSON.parse(await readFile(file, 'utf8')) as DraftRecord[];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') deps.logger.error({ event: 'draft.record_unreadable', file, err: (err as Error).message }, 'the record of drafts to delete could not be read; drafts may be left in Drafts');
    }
    for (const r of Array.isArray(stored) ? stored : []) cleanup.records.set(r.draftId, { ...r, state: 'delete', retryAt: 0 });
    if (cleanup.records.size > 0) {
      deps.logger.info({ event: 'draft.cleanup_resumed', drafts: cleanup.records.size }, 'drafts left by the previous run are queued for deletion');
      await cleanup.persist();
    }
    return cleanup;
  }

  /** Drafts waiting for deletion or in use, for tests and `queue` output. */
  get pending(): DraftRecord[] {
    return [...this.records.values()].map((r) => ({ ...r }));
  }

  start(): void {
    this.stopped = false;
    this.pump();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.allSettled([...this.running.values()]);
    await this.writing;
  }

  /** The draft tracker of one queued message for one attempt. */
  trackerFor(queueId: string, mailbox: string, graphProfile?: string): DraftTracker {
    const building = () => [...this.records.values()].find((r) => r.queueId === queueId && r.state === 'building');
    return {
      current: () => (building() ? (this.progress.get(queueId) ?? null) : null),
      created: async (draftId) => {
        this.records.set(draftId, { draftId, mailbox, ...(graphProfile ? { graphProfile } : {}), queueId, state: 'building', since: this.deps.clock.now(), attempts: 0, retryAt: 0 });
        await this.persist();
      },
      progress: (p) => void this.progress.set(queueId, p),
      discard: () => this.discard(queueId),
      sent: async () => {
        this.progress.delete(queueId);
        const record = building();
        if (!record) return;
        this.records.delete(record.draftId);
        await this.persist();
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
    await this.persist();
    this.deps.logger.info({ event: 'draft.discarded', queueId, mailbox: record.mailbox, draftId: record.draftId }, 'draft queued for deletion');
    this.pump();
  }

  private persist(): Promise<void> {
    // Writes one after the other; each is a whole new file renamed into place (never half-written).
    const snapshot = JSON.stringify([...this.records.values()]);
    this.writing = this.writing.then(async () => {
      const tmp = `${this.file}.tmp`;
      const handle = await open(tmp, 'w', 0o600);
      try {
        await handle.writeFile(snapshot);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, this.file);
    });
    return this.writing;
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
      const run = this.deleteOne(record).finally(() => {
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
    const { clock, logger, mailboxes } = this.deps;
    const mayStart = () => mailboxes.pausedUntil(record.mailbox) <= clock.now();
    let outcome: GraphOutcome;
    try {
      outcome = await this.deps.deleteDraft(record, mayStart);
    } catch (err) {
      outcome = { kind: 'network', message: (err as Error).message };
    }
    const now = clock.now();
    if (isHeld(outcome)) return; // the mailbox was paused meanwhile: pump() waits for the pause
    // 404: already gone (sent after all, or deleted by someone): nothing left to clean up.
    if (outcome.kind === 'http' && (outcome.status < 300 || outcome.status === 404)) {
      this.records.delete(record.draftId);
      await this.persist();
      logger.info({ event: 'draft.deleted', queueId: record.queueId, mailbox: record.mailbox, draftId: record.draftId, status: outcome.status }, 'draft deleted');
      return;
    }
    record.attempts += 1;
    const retryAfterMs = outcome.kind === 'http' ? outcome.retryAfterMs : null;
    record.retryAt = retryAfterMs !== null ? now + retryAfterMs : now + backoffDelayMs(record.attempts, this.deps.backoff);
    // A Retry-After on the clean-up request pauses the mailbox for deliveries too: same limits.
    if (outcome.kind === 'http' && retryAfterMs !== null && (outcome.status === 429 || outcome.status >= 500)) mailboxes.pause(record.mailbox, record.retryAt);
    await this.persist();
    const why = outcome.kind === 'http' ? `HTTP ${outcome.status}${outcome.code ? ` ${outcome.code}` : ''}` : `network error: ${outcome.code ?? ''} ${outcome.message}`.trim();
    logger.warn({ event: 'draft.delete_deferred', queueId: record.queueId, mailbox: record.mailbox, draftId: record.draftId, reason: why, retryInMs: record.retryAt - now }, 'draft deletion deferred');
  }
}
