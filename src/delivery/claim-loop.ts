/**
 * Delivery for a spool shared by several relays (Postfix qmgr's role, done by every node): the
 * node claims due messages from the shared queue (leases, within the cluster's per-mailbox limits,
 * which the spool counts), runs each attempt while renewing its lease every third of leaseMs, and
 * records the outcome under the lease. It holds nothing another node needs: a node that dies loses
 * its leases after leaseMs and another node takes the messages over.
 *
 * It wakes at once on the spool's notifications (new mail, a freed slot, a pause), and polls every
 * POLL_MS as the safety net (due retries, pauses and pacing windows that end).
 */
import type { Logger } from '../log.js';
import type { SpoolEntry } from '../spool/entry.js';
import type { Lease, Spool, SpoolEvent } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import type { AttemptResult } from './attempt.js';
import type { SchedulerDeps, SchedulerOptions } from './scheduler.js';
import { planSettlement, type SettlementPlan } from './settlement.js';

const POLL_MS = 1_000;
/** Attempts one node runs at once across all mailboxes (each mailbox is limited by the cluster). */
const NODE_CONCURRENCY = 64;
/** An outcome the database could not take is retried this often, for as long as this. */
const SETTLE_RETRY_MS = 1_000;
const SETTLE_GIVE_UP_MS = 600_000;
const STATS_EVERY_MS = 2_000;

export interface ClaimLoopOptions extends SchedulerOptions {
  /** A node that stops renewing loses its claims after this (spool.postgres.leaseTimeout). */
  leaseMs: number;
  /** This node's name in leases and logs. */
  node: string;
}

export interface ClusterSnapshot {
  depth: number;
  oldestReceivedAt: number | null;
  held: number;
  inFlightByMailbox: Map<string, number>;
}

export interface ClaimLoopDeps extends SchedulerDeps {
  /** The cluster's queue figures (metrics); refreshed in the background, read synchronously. */
  clusterStats?: () => Promise<ClusterSnapshot>;
}

export class ClaimLoop {
  private readonly inFlight = new Map<string, { lease: Lease; done: Promise<void> }>();
  /** Pauses this node knows of (its own 429s and other nodes' notifications): checked before every request. */
  private readonly pauses = new Map<string, number>();
  /** Requests outside attempts (draft clean-up) in flight per mailbox. */
  private readonly extraInFlight = new Map<string, number>();
  private running = false;
  private claiming = false;
  private again = false;
  private poll: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private claimFailing = false;
  private stats: ClusterSnapshot = { depth: 0, oldestReceivedAt: null, held: 0, inFlightByMailbox: new Map() };
  private statsAt = 0;

  constructor(
    private options: ClaimLoopOptions,
    private readonly deps: ClaimLoopDeps,
  ) {}

  private get spool(): Spool {
    return this.deps.spool;
  }

  private get clock(): Clock {
    return this.deps.clock;
  }

  private get logger(): Logger {
    return this.deps.logger;
  }

  updateOptions(options: SchedulerOptions): void {
    this.options = { ...this.options, ...options };
    this.pump();
  }

  start(): void {
    this.running = true;
    this.unsubscribe = this.spool.subscribe?.((event) => this.onEvent(event)) ?? null;
    this.poll = setInterval(() => {
      this.pump();
      void this.refreshStats();
    }, POLL_MS);
    this.poll.unref();
    this.pump();
    void this.refreshStats();
  }

  private onEvent(event: SpoolEvent): void {
    if (event.kind === 'pause') this.notePause(event.mailbox, event.untilMs);
    else this.pump();
  }

  /**
   * Right before a request leaves: the pause another node recorded may not have reached this one
   * yet (NOTIFY is delivered asynchronously, and late on a busy node), so ask the database itself.
   * The window left is one query, instead of the notification's delivery and processing.
   */
  async refreshPause(mailbox: string): Promise<void> {
    const until = await this.spool.mailboxPausedUntil?.(mailbox).catch(() => 0);
    if (until) this.notePause(mailbox, until);
  }

  private notePause(mailbox: string, untilMs: number): void {
    this.pauses.set(mailbox, Math.max(this.pauses.get(mailbox) ?? 0, untilMs));
  }

  /** New local mail: the spool's notification wakes the other nodes; this one claims at once. */
  enqueue(_entry: SpoolEntry): void {
    this.pump();
  }

  /** Queue commands may change a message unless this node is delivering it (the spool refuses other nodes' leases). */
  forget(id: string): boolean {
    return !this.inFlight.has(id);
  }

  isInFlight(id: string): boolean {
    return this.inFlight.has(id);
  }

  pausedUntil(mailbox: string): number {
    return this.pauses.get(mailbox) ?? 0;
  }

  /**
   * An operator's `queue retry`: the shared spool clears the claim's schedule itself; the no-extra-
   * backoff rule of the single-node scheduler (issue 12, item 11) is not carried across nodes yet.
   */
  noteManualRetry(_id: string, _scheduledAt: number): void {}

  /** A Retry-After seen outside an attempt (a draft's clean-up): paused here and for every node. */
  pause(mailbox: string, untilMs: number): void {
    this.notePause(mailbox, untilMs);
    void this.spool.pauseMailbox(mailbox, untilMs).catch((err: Error) => {
      this.logger.error({ event: 'delivery.pause_not_shared', mailbox, err: err.message }, 'could not share a Retry-After pause with the cluster');
    });
  }

  /**
   * A slot for a request outside an attempt (draft clean-up): refused while the mailbox is paused.
   * The cluster's in-flight count lives in the leases; a clean-up DELETE is rare and not leased, so
   * only this node's own requests are counted against the limit here.
   */
  tryAcquire(mailbox: string): boolean {
    if (this.pausedUntil(mailbox) > this.clock.now()) return false;
    let mine = this.extraInFlight.get(mailbox) ?? 0;
    for (const { lease } of this.inFlight.values()) if (lease.entry.mailbox === mailbox) mine += 1;
    if (mine >= this.options.maxInFlightPerMailbox) return false;
    this.extraInFlight.set(mailbox, (this.extraInFlight.get(mailbox) ?? 0) + 1);
    return true;
  }

  release(mailbox: string): void {
    const left = (this.extraInFlight.get(mailbox) ?? 1) - 1;
    if (left > 0) this.extraInFlight.set(mailbox, left);
    else this.extraInFlight.delete(mailbox);
  }

  /** The cluster's in-flight leases for the mailbox (least-loaded routing). */
  queuedFor(mailbox: string): number {
    return this.stats.inFlightByMailbox.get(mailbox) ?? 0;
  }

  snapshot(): ClusterSnapshot {
    return this.stats;
  }

  private async refreshStats(): Promise<void> {
    if (!this.deps.clusterStats || this.clock.now() - this.statsAt < STATS_EVERY_MS) return;
    this.statsAt = this.clock.now();
    try {
      this.stats = await this.deps.clusterStats();
    } catch {
      // The database is away: the figures stay as last seen; /readyz says why.
    }
  }

  /** Claims as long as there is room and the spool hands out work; one claim at a time per node. */
  private pump(): void {
    if (!this.running) return;
    if (this.claiming) {
      this.again = true;
      return;
    }
    this.claiming = true;
    void (async () => {
      try {
        do {
          this.again = false;
          const room = NODE_CONCURRENCY - this.inFlight.size;
          if (room <= 0) break;
          const leases = await this.spool.claim(this.options.node, room, this.limits(), this.clock.now());
          if (this.claimFailing) {
            this.claimFailing = false;
            this.logger.info({ event: 'delivery.resumed', node: this.options.node }, 'claiming from the shared queue again');
          }
          for (const lease of leases) this.dispatch(lease);
          if (leases.length === room) this.again = true;
        } while (this.again && this.running);
      } catch (err) {
        // The database is away: delivery pauses; the poll tries again every second.
        if (!this.claimFailing) this.logger.error({ event: 'delivery.paused', node: this.options.node, err: (err as Error).message }, 'cannot claim from the shared queue; delivery paused until the database answers');
        this.claimFailing = true;
      } finally {
        this.claiming = false;
      }
    })();
  }

  private limits() {
    return {
      maxInFlightPerMailbox: this.options.maxInFlightPerMailbox,
      messagesPerMinute: this.options.messagesPerMinute ?? 0,
      recipientsPerDay: this.options.recipientsPerDay ?? 0,
      leaseMs: this.options.leaseMs,
    };
  }

  private dispatch(lease: Lease): void {
    const { entry } = lease;
    const leaseMs = this.options.leaseMs;
    let lost = false;
    const renewal = setInterval(() => {
      this.spool.renew(lease, leaseMs).then(
        (held) => {
          if (!held && !lost) {
            lost = true;
            this.logger.warn({ event: 'delivery.lease_lost', queueId: entry.id, node: this.options.node }, 'lease lost while the attempt runs; its outcome will not be recorded (another node has the message)');
          }
        },
        () => undefined, // database away: the next renewal tries again
      );
    }, Math.max(100, Math.floor(leaseMs / 3)));
    renewal.unref();
    const done = (async () => {
      let result: AttemptResult;
      try {
        result = await this.deps.attempt(entry);
      } catch (err) {
        result = { decision: { action: 'retry', kind: 'transient', reason: `internal error during attempt: ${(err as Error).message}`, retryAfterMs: null, pauseMailbox: false } };
      }
      const plan = planSettlement(entry, result, this.clock.now(), this.options, this.deps.random);
      if (plan.pauseMailboxUntil !== null) {
        this.notePause(entry.mailbox, plan.pauseMailboxUntil);
        await this.spool.pauseMailbox(entry.mailbox, plan.pauseMailboxUntil).catch((err: Error) => {
          this.logger.error({ event: 'delivery.pause_not_shared', mailbox: entry.mailbox, err: err.message }, 'could not share a Retry-After pause with the cluster');
        });
      }
      clearInterval(renewal);
      return this.record(lease, plan, result);
    })().then(
      (handedOver) => {
        clearInterval(renewal);
        this.inFlight.delete(entry.id);
        // A slot passed on to the next message is not free: a claim now would only hold the
        // mailbox's row lock that the other slots' hand-overs wait for.
        if (!handedOver) this.pump();
      },
      () => {
        clearInterval(renewal);
        this.inFlight.delete(entry.id);
        this.pump();
      },
    );
    this.inFlight.set(entry.id, { lease, done });
  }

  /**
   * Writes the outcome under the lease, retrying while the database is away (the lease fences late
   * writes). True when the slot was handed straight to the mailbox's next message.
   */
  private async record(lease: Lease, plan: SettlementPlan, result: AttemptResult): Promise<boolean> {
    const { entry } = lease;
    const giveUpAt = this.clock.now() + SETTLE_GIVE_UP_MS;
    for (;;) {
      try {
        // While running, the freed slot passes straight to the mailbox's next due message (pg-spool settleAndClaim).
        const handOver = this.running && this.spool.settleAndClaim ? await this.spool.settleAndClaim(lease, plan.settlement, this.options.node, this.limits(), this.clock.now()) : null;
        const held = handOver ? handOver.held : await this.spool.settle(lease, plan.settlement);
        const next = handOver?.next ?? [];
        for (const lease of next) this.dispatch(lease);
        if (!held) {
          this.logger.warn({ event: 'delivery.lease_lost', queueId: entry.id, node: this.options.node, outcome: plan.outcome }, 'outcome not recorded: the lease lapsed and another node has the message');
          return false;
        }
        this.logger[plan.log.level]({ ...plan.log.fields, node: this.options.node }, plan.log.message);
        this.deps.onSettled?.(entry, result, plan.outcome);
        return next.length > 0;
      } catch (err) {
        if (!this.running || this.clock.now() > giveUpAt) {
          this.logger.error({ event: 'spool.update_failed', queueId: entry.id, err: (err as Error).message }, 'could not record the delivery outcome; the lease lapses and the message is tried again');
          return false;
        }
        await new Promise((r) => setTimeout(r, SETTLE_RETRY_MS));
      }
    }
  }

  async stop(deadlineMs: number): Promise<{ unfinished: number }> {
    this.running = false;
    if (this.poll) clearInterval(this.poll);
    this.unsubscribe?.();
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => {
      timeout = setTimeout(resolve, deadlineMs);
    });
    await Promise.race([Promise.allSettled([...this.inFlight.values()].map((f) => f.done)), expired]);
    clearTimeout(timeout);
    return { unfinished: this.inFlight.size };
  }
}
