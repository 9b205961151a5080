/**
 * The queue manager (Postfix qmgr's role): which message goes next, per-mailbox concurrency
 * (4 in flight by default, Graph's documented limit), Retry-After honoured per mailbox, and the
 * outcome written back to the spool before the next decision. It holds no state the spool cannot
 * rebuild: after a crash, recovery re-enqueues everything in queue/.
 */
import type { Logger } from '../log.js';
import type { SpoolEntry } from '../spool/entry.js';
import { STANDBY_READ_AHEAD_BYTES, type Spool } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { MinHeap } from '../util/min-heap.js';
import type { AttemptResult } from './attempt.js';
import type { BackoffPolicy } from './backoff.js';
import { planSettlement, type SettledOutcome } from './settlement.js';

export type { SettledOutcome } from './settlement.js';

export interface SchedulerOptions {
  maxInFlightPerMailbox: number;
  /** Exchange's per-mailbox sending limits; 0 = no limit. */
  messagesPerMinute?: number;
  recipientsPerDay?: number;
  backoff: BackoffPolicy;
  maxQueueLifetimeMs: number;
}

/**
 * A message that waited ready for a slot: a shared spool's standby lease starting in the slot its
 * node's previous request to the mailbox just left (claim-loop.ts), or on one node a message read
 * ahead while its mailbox's slots were busy (Scheduler).
 */
export interface PromotedStandby {
  /** Its bytes, read while it waited (small messages). */
  content?: Promise<Buffer>;
  /** Called as its request to Graph is written (the node records the previous outcome after the first call). */
  leaving?: () => void;
}

export interface SchedulerDeps {
  spool: Spool;
  /** `promoted`: a shared spool's standby lease taking a slot its node just freed (claim-loop.ts). */
  attempt: (entry: SpoolEntry, promoted?: PromotedStandby) => Promise<AttemptResult>;
  clock: Clock;
  logger: Logger;
  random?: () => number;
  /** Notified after every finished attempt (metrics, tests). */
  onSettled?: (entry: SpoolEntry, result: AttemptResult, outcome: SettledOutcome) => void;
}

interface MailboxState {
  inFlight: number;
  /** No request to this mailbox before this time (Graph's Retry-After). */
  pausedUntil: number;
  ready: SpoolEntry[];
  /** Dispatch times in the last minute, and recipients in the last day in minute buckets: pacing. */
  sentTimes: number[];
  sentRecipients: Array<{ at: number; count: number }>;
}

const MINUTE = 60_000;
const DAY = 86_400_000;
/**
 * Bytes read ahead across all mailboxes at most (each message up to STANDBY_READ_AHEAD_BYTES, at
 * most one per slot of its mailbox): alerts are a few KB, and the relay's memory is budgeted
 * (200 MB peak RSS relaying a 60 MB attachment, README "Figures").
 */
const READ_AHEAD_BUDGET_BYTES = 8 * 1024 * 1024;

/**
 * Records a dispatch in the pacing windows. Both are pruned from the front (times only grow), and
 * the day window keeps one bucket per minute (at most 1,440, `at` = the bucket's last send, so a
 * bucket leaves the window no earlier than its last recipient did). Copying the whole day's sends
 * on every dispatch cost O(sends per day) each time: at Graph's 40 msg/s, 3.4 million entries.
 */
export function recordSend(state: Pick<MailboxState, 'sentTimes' | 'sentRecipients'>, recipients: number, now: number): void {
  let old = 0;
  while (old < state.sentTimes.length && (state.sentTimes[old] as number) <= now - MINUTE) old += 1;
  if (old > 0) state.sentTimes.splice(0, old);
  state.sentTimes.push(now);
  old = 0;
  while (old < state.sentRecipients.length && (state.sentRecipients[old] as { at: number }).at <= now - DAY) old += 1;
  if (old > 0) state.sentRecipients.splice(0, old);
  const last = state.sentRecipients[state.sentRecipients.length - 1];
  if (last && Math.floor(last.at / MINUTE) === Math.floor(now / MINUTE)) {
    last.at = now;
    last.count += recipients;
  } else {
    state.sentRecipients.push({ at: now, count: recipients });
  }
}

/**
 * When the next message for a mailbox may go, given Exchange's per-mailbox limits; `now` when it
 * may go now. Pure, for the fake-clock tests.
 */
export function pacedUntil(state: Pick<MailboxState, 'sentTimes' | 'sentRecipients'>, recipients: number, now: number, limits: { messagesPerMinute?: number; recipientsPerDay?: number }): number {
  let until = now;
  const perMinute = limits.messagesPerMinute ?? 0;
  if (perMinute > 0) {
    const recent = state.sentTimes.filter((t) => t > now - MINUTE);
    if (recent.length >= perMinute) until = Math.max(until, (recent[recent.length - perMinute] as number) + MINUTE);
  }
  const perDay = limits.recipientsPerDay ?? 0;
  if (perDay > 0) {
    const window = state.sentRecipients.filter((r) => r.at > now - DAY);
    let total = window.reduce((sum, r) => sum + r.count, 0);
    // Wait until enough of the oldest sends have left the 24-hour window (a message larger than the
    // whole budget goes as soon as the window is empty, rather than never).
    for (const r of window) {
      if (total + recipients <= perDay) break;
      total -= r.count;
      until = Math.max(until, r.at + DAY);
    }
  }
  return until;
}

export class Scheduler {
  private readonly waiting = new MinHeap<SpoolEntry>((a, b) => a.nextAttemptAt < b.nextAttemptAt);
  private readonly mailboxes = new Map<string, MailboxState>();
  /** Entries the scheduler currently owns (waiting, ready or in flight), by id: enqueue is idempotent. */
  private readonly owned = new Map<string, SpoolEntry>();
  /** Entries on hold: known (for queue depth), never dispatched. */
  private readonly held = new Map<string, SpoolEntry>();
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Messages an operator retried by hand, with the time their automatic attempt was due. */
  private readonly manualRetries = new Map<string, number>();
  /**
   * Bytes of ready messages, read while every slot of their mailbox was busy: when a request ends,
   * the next starts from memory. Read when the slot freed, the message (from the journal or its
   * queue file, through libuv's thread pool) took 1.1 ms of the relay's 1.8 ms from an answer to
   * its next request (bench figure 4, traced per step).
   */
  private readonly readAhead = new Map<string, { bytes: number; content: Promise<Buffer> }>();
  private readAheadBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private running = false;

  constructor(
    private options: SchedulerOptions,
    private readonly deps: SchedulerDeps,
  ) {}

  /** New limits from a configuration reload; they apply from the next decision on. */
  updateOptions(options: SchedulerOptions): void {
    this.options = options;
    this.pump();
  }

  get stats() {
    let ready = 0;
    for (const m of this.mailboxes.values()) ready += m.ready.length;
    return { owned: this.owned.size, held: this.held.size, waiting: this.waiting.size, ready, inFlight: this.inFlight.size };
  }

  /** Queue depth, oldest message and in-flight requests, for metrics. */
  snapshot(): { depth: number; oldestReceivedAt: number | null; held: number; inFlightByMailbox: Map<string, number> } {
    let oldest: number | null = null;
    for (const map of [this.owned, this.held]) for (const e of map.values()) if (oldest === null || e.receivedAt < oldest) oldest = e.receivedAt;
    const inFlightByMailbox = new Map<string, number>();
    for (const [name, m] of this.mailboxes) if (m.inFlight > 0) inFlightByMailbox.set(name, m.inFlight);
    return { depth: this.owned.size + this.held.size, oldestReceivedAt: oldest, held: this.held.size, inFlightByMailbox };
  }

  /** Messages this scheduler holds for a mailbox (waiting, ready or in flight). */
  queuedFor(mailbox: string): number {
    let count = 0;
    for (const e of this.owned.values()) if (e.mailbox === mailbox) count += 1;
    return count;
  }

  isInFlight(id: string): boolean {
    return this.inFlight.has(id);
  }

  inFlightFor(mailbox: string): number {
    return this.mailboxes.get(mailbox)?.inFlight ?? 0;
  }

  /** No request to this mailbox before this time (0: not paused). */
  pausedUntil(mailbox: string): number {
    return this.mailboxes.get(mailbox)?.pausedUntil ?? 0;
  }

  /** An operator retries this message now; `scheduledAt` is when its next automatic attempt was due. */
  noteManualRetry(id: string, scheduledAt: number): void {
    this.manualRetries.set(id, scheduledAt);
  }

  /**
   * A Retry-After received outside a delivery attempt (a draft's clean-up request): the same pause
   * for the mailbox, never shortened by a shorter one.
   */
  pause(mailbox: string, untilMs: number): void {
    const state = this.mailbox(mailbox);
    state.pausedUntil = Math.max(state.pausedUntil, untilMs);
  }

  /** One of the mailbox's in-flight slots for a request outside an attempt (draft clean-up); false while paused or full. */
  tryAcquire(mailbox: string): boolean {
    const state = this.mailbox(mailbox);
    if (state.pausedUntil > this.deps.clock.now() || state.inFlight >= this.options.maxInFlightPerMailbox) return false;
    state.inFlight += 1;
    return true;
  }

  release(mailbox: string): void {
    const state = this.mailbox(mailbox);
    state.inFlight = Math.max(0, state.inFlight - 1);
    this.pump();
  }

  start(): void {
    this.running = true;
    this.pump();
  }

  enqueue(entry: SpoolEntry): void {
    if (this.owned.has(entry.id) || this.held.has(entry.id)) return;
    if (entry.held) {
      this.held.set(entry.id, entry);
      return;
    }
    this.owned.set(entry.id, entry);
    this.waiting.push(entry);
    if (this.running) this.pump();
  }

  /**
   * Forgets a message (held, deleted or replaced by an operator). Refused (false) while an attempt
   * for it is in flight: its outcome is about to be written to the spool.
   */
  forget(id: string): boolean {
    if (this.inFlight.has(id)) return false;
    this.takeReadAhead(id);
    this.waiting.removeWhere((e) => e.id === id);
    for (const m of this.mailboxes.values()) m.ready = m.ready.filter((e) => e.id !== id);
    this.owned.delete(id);
    this.held.delete(id);
    return true;
  }

  /** Stops dispatching, then waits up to deadlineMs for attempts in flight; the rest stays spooled. */
  async stop(deadlineMs: number): Promise<{ unfinished: number }> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const id of [...this.readAhead.keys()]) this.takeReadAhead(id);
    const pending = [...this.inFlight.values()];
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((resolve) => {
      timeout = setTimeout(() => resolve('timeout'), deadlineMs);
    });
    await Promise.race([Promise.allSettled(pending), expired]);
    clearTimeout(timeout);
    return { unfinished: this.inFlight.size };
  }

  private mailbox(name: string): MailboxState {
    let state = this.mailboxes.get(name);
    if (!state) {
      state = { inFlight: 0, pausedUntil: 0, ready: [], sentTimes: [], sentRecipients: [] };
      this.mailboxes.set(name, state);
    }
    return state;
  }

  private pump(): void {
    if (!this.running) return;
    const now = this.deps.clock.now();
    for (let next = this.waiting.peek(); next && next.nextAttemptAt <= now; next = this.waiting.peek()) {
      this.waiting.pop();
      this.mailbox(next.mailbox).ready.push(next);
    }
    let wakeAt = this.waiting.peek()?.nextAttemptAt ?? Infinity;
    for (const [name, state] of this.mailboxes) {
      if (state.ready.length === 0) {
        if (state.inFlight === 0 && state.pausedUntil <= now && state.sentTimes.length === 0 && state.sentRecipients.length === 0) this.mailboxes.delete(name);
        continue;
      }
      if (state.pausedUntil > now) {
        wakeAt = Math.min(wakeAt, state.pausedUntil);
        continue;
      }
      while (state.inFlight < this.options.maxInFlightPerMailbox && state.ready.length > 0) {
        const next = state.ready[0] as SpoolEntry;
        const paced = pacedUntil(state, next.envelope.rcptTo.length, now, this.options);
        if (paced > now) {
          wakeAt = Math.min(wakeAt, paced);
          break;
        }
        state.ready.shift();
        recordSend(state, next.envelope.rcptTo.length, now);
        this.dispatch(state, next);
      }
      if (state.inFlight >= this.options.maxInFlightPerMailbox) this.readAheadFor(state);
    }
    this.armTimer(wakeAt, now);
  }

  /** Reads the bytes of the messages that take the mailbox's next free slots (one per slot, small ones, within the budget). */
  private readAheadFor(state: MailboxState): void {
    for (const entry of state.ready.slice(0, this.options.maxInFlightPerMailbox)) {
      if (this.readAhead.has(entry.id) || entry.size > STANDBY_READ_AHEAD_BYTES || this.readAheadBytes + entry.size > READ_AHEAD_BUDGET_BYTES) continue;
      const content = this.deps.spool.readMessage(entry.id);
      content.catch(() => undefined); // not unhandled while it waits; the attempt reads again if it failed
      this.readAhead.set(entry.id, { bytes: entry.size, content });
      this.readAheadBytes += entry.size;
    }
  }

  private takeReadAhead(id: string): Promise<Buffer> | undefined {
    const held = this.readAhead.get(id);
    if (!held) return undefined;
    this.readAhead.delete(id);
    this.readAheadBytes -= held.bytes;
    return held.content;
  }

  private armTimer(wakeAt: number, now: number): void {
    if (wakeAt === Infinity) return;
    if (this.timer && this.timerAt <= wakeAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = wakeAt;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.pump();
    }, Math.max(0, wakeAt - now));
  }

  private dispatch(state: MailboxState, entry: SpoolEntry): void {
    state.inFlight += 1;
    let slotFreed = false;
    const freeSlot = () => {
      if (!slotFreed) {
        slotFreed = true;
        state.inFlight -= 1;
      }
      this.pump();
    };
    const content = this.takeReadAhead(entry.id);
    const run = this.deps
      .attempt(entry, content ? { content } : undefined)
      .catch((err: unknown): AttemptResult => ({
        decision: { action: 'retry', kind: 'transient', reason: `internal error during attempt: ${(err as Error).message}`, retryAfterMs: null, pauseMailbox: false },
      }))
      .then((result) => {
        // settle() records a Retry-After pause synchronously, before its first await; the Graph
        // request is over, so the mailbox slot is free while the spool is being updated.
        const settling = this.settle(state, entry, result);
        freeSlot();
        return settling;
      })
      .catch((err: unknown) => {
        // The spool could not record the outcome; the message is still on disk and is retried.
        this.deps.logger.error({ event: 'spool.update_failed', queueId: entry.id, err: (err as Error).message }, 'could not record the delivery outcome');
        this.requeue({ ...entry, nextAttemptAt: this.deps.clock.now() + this.options.backoff.minMs });
      })
      .finally(() => {
        this.inFlight.delete(entry.id);
        freeSlot();
      });
    this.inFlight.set(entry.id, run);
  }

  private requeue(entry: SpoolEntry): void {
    this.waiting.push(entry);
  }

  private async settle(state: MailboxState, entry: SpoolEntry, result: AttemptResult): Promise<void> {
    const manual = this.manualRetries.get(entry.id);
    this.manualRetries.delete(entry.id);
    const plan = planSettlement(entry, result, this.deps.clock.now(), this.options, this.deps.random, manual);
    // Recorded before the first await (see dispatch): no request leaves once we know to wait.
    if (plan.pauseMailboxUntil !== null) state.pausedUntil = Math.max(state.pausedUntil, plan.pauseMailboxUntil);
    const { settlement } = plan;
    if (settlement.kind === 'postponed') {
      // Not an attempt: nothing was sent, so nothing is recorded on disk.
      this.requeue({ ...entry, nextAttemptAt: settlement.untilMs });
    } else if (settlement.kind === 'delivered') {
      await this.deps.spool.remove(entry.id);
      this.owned.delete(entry.id);
    } else if (settlement.kind === 'failed') {
      await this.deps.spool.moveToFailed(settlement.entry);
      this.owned.delete(entry.id);
    } else {
      await this.deps.spool.update(settlement.entry);
      this.owned.set(entry.id, settlement.entry);
      this.requeue(settlement.entry);
    }
    this.deps.logger[plan.log.level](plan.log.fields, plan.log.message);
    this.deps.onSettled?.(entry, result, plan.outcome);
  }
}
