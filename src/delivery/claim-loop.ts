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
import { STANDBY_READ_AHEAD_BYTES, type Lease, type Spool, type SpoolEvent } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import type { AttemptResult } from './attempt.js';
import type { PromotedStandby, SchedulerDeps, SchedulerOptions } from './scheduler.js';
import { planSettlement, type SettlementPlan } from './settlement.js';

const POLL_MS = 1_000;
/** Attempts one node runs at once across all mailboxes (each mailbox is limited by the cluster). */
const NODE_CONCURRENCY = 64;
/** An outcome the database could not take is retried this often, for as long as this. */
const SETTLE_RETRY_MS = 1_000;
const SETTLE_GIVE_UP_MS = 600_000;
const STATS_EVERY_MS = 2_000;
/**
 * Longest the outcome of a request waits for the promoted request after it to leave (untilLeaving):
 * a request normally leaves within 1-2 ms of the answer before it (p90 1.0 ms, figure 8 traced).
 * Kept short: until the outcome is written, a crash of this relay sends that message again.
 */
const HANDOVER_WAIT_MS = 10;
/**
 * Messages kept leased on standby per slot a node fills for a mailbox: when a request ends, the
 * next one starts at once from the standby lease, and the database learns of the hand-over
 * afterwards. Settling first and claiming the next message then left each slot empty for ~8 ms of
 * every ~110 ms cycle (one round trip, the function's work and a commit, then reading the next
 * message): three relays filled 0.90-0.91x of Graph's 40 msg/s for one mailbox (bench figure 8,
 * traced per step on an idle machine).
 */
const STANDBY_PER_SLOT = 1;

export interface ClaimLoopOptions extends SchedulerOptions {
  /** A node that stops renewing loses its claims after this (spool.postgres.leaseTimeout). */
  leaseMs: number;
  /** This node's name in leases and logs. */
  node: string;
  /** HANDOVER_WAIT_MS unless set (tests). */
  handOverWaitMs?: number;
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
  /** Leases on standby per mailbox, each renewed until it is promoted to a slot or handed back. */
  private readonly standby = new Map<string, Array<{ lease: Lease; renewal: NodeJS.Timeout; renewedAt: () => number; content: Promise<Buffer> | undefined }>>();
  /** Requests outside attempts (draft clean-up) in flight per mailbox. */
  private readonly extraInFlight = new Map<string, number>();
  private running = false;
  private claiming = false;
  /** The claim round running now (stop() waits for it: leases it takes after a stop must be handed back). */
  private pumping: Promise<void> = Promise.resolve();
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
    else if (event.kind === 'wake' && event.mailbox && this.holdsEverySlot(event.mailbox)) return;
    else {
      // Notifications resumed after a gap: a pause said during it was missed; the mailboxes this
      // node sends to look it up (a promoted standby relies on what was heard, below).
      if (event.kind === 'heard') for (const mailbox of this.mailboxesInUse()) void this.refreshPause(mailbox);
      this.pump();
    }
  }

  private mailboxesInUse(): Set<string> {
    const mailboxes = new Set(this.standby.keys());
    for (const { lease } of this.inFlight.values()) mailboxes.add(lease.entry.mailbox);
    return mailboxes;
  }

  /**
   * Whether an attempt asks the database for the mailbox's pause right before its request.
   * A claimed message does: the claim saw the pause one round trip ago, and the read runs next to
   * the message's own read, so it adds no wait. A promoted standby does not while notifications
   * flow: its bytes are in memory and its request can leave the moment the slot frees, and the read
   * was then the whole gap between one answer and the next request (2.9 ms mean, p90 5.3 ms, of
   * a ~108 ms cycle: bench figure 8 traced per step); what it would add is only the pause another
   * node committed within the last notification's delivery time, which the read itself misses by
   * its own round trip.
   */
  readsPauseFirst(promoted: boolean): boolean {
    return !promoted || this.spool.hearsOthersNow?.() !== true;
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

  /**
   * New local mail: the spool's notification wakes the other nodes; this one claims at once, unless
   * it holds every slot of the mailbox itself (see holdsEverySlot).
   */
  enqueue(entry: SpoolEntry): void {
    if (!this.holdsEverySlot(entry.mailbox)) this.pump();
  }

  /**
   * True when this node's own requests fill the mailbox's slots: no claim can take one (the cluster
   * counts these), and each of them passes its slot on when it ends (settleAndClaim leases the next
   * due message, or wakes every node when it cannot). A claim then only held the mailbox's row lock
   * for nothing: with 8 senders into one relay, every commit's claim queued in front of the
   * hand-overs (relay.settle_and_claim waited on that lock, figure 6 with BENCH_PG_STATEMENTS=1).
   * Only deliveries count here: a draft's DELETE (tryAcquire) passes nothing on when it ends.
   */
  private holdsEverySlot(mailbox: string): boolean {
    return this.deliveriesTo(mailbox) >= this.options.maxInFlightPerMailbox;
  }

  /** This node's deliveries in flight to the mailbox. */
  private deliveriesTo(mailbox: string): number {
    let count = 0;
    for (const { lease } of this.inFlight.values()) if (lease.entry.mailbox === mailbox) count += 1;
    return count;
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
    if ((this.extraInFlight.get(mailbox) ?? 0) + this.deliveriesTo(mailbox) >= this.options.maxInFlightPerMailbox) return false;
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
    this.pumping = (async () => {
      try {
        do {
          this.again = false;
          const room = NODE_CONCURRENCY - this.inFlight.size;
          if (room <= 0) break;
          // Each slot taken comes with a standby lease, as every hand-over does: the second request of
          // a burst then starts as the first ends (the first round of figure 8 otherwise waited a
          // settle, a claim and a read: 56-86 ms after the first answers, traced).
          const leases = await this.spool.claim(this.options.node, room, this.limits(), this.clock.now(), STANDBY_PER_SLOT);
          if (!this.running) {
            // stop() began while this claim ran: attempts started now would outlive the spool
            // (their outcome unrecorded, so sent again by another node once the lease lapses, a
            // duplicate: the SIGTERM test of operations.test.ts saw one). Nothing was sent: the leases go back at once.
            await this.handBack(leases);
            break;
          }
          if (this.claimFailing) {
            this.claimFailing = false;
            this.logger.info({ event: 'delivery.resumed', node: this.options.node }, 'claiming from the shared queue again');
          }
          const slots = leases.filter((lease) => lease.standby !== true);
          for (const lease of slots) void this.dispatch(lease);
          for (const lease of leases) if (lease.standby === true) this.addStandby(lease);
          if (slots.length === room) this.again = true;
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

  /** Returns leases no attempt used ('postponed' to the same time: not an attempt, its send reservation freed). */
  private async handBack(leases: Lease[]): Promise<void> {
    await Promise.all(
      leases.map((lease) =>
        this.spool.settle(lease, { kind: 'postponed', untilMs: lease.entry.nextAttemptAt }).catch((err: Error) => {
          this.logger.warn({ event: 'delivery.lease_not_returned', queueId: lease.entry.id, err: err.message }, 'could not hand back a lease at stop; it lapses after leaseTimeout');
        }),
      ),
    );
  }

  private limits() {
    return {
      maxInFlightPerMailbox: this.options.maxInFlightPerMailbox,
      messagesPerMinute: this.options.messagesPerMinute ?? 0,
      recipientsPerDay: this.options.recipientsPerDay ?? 0,
      leaseMs: this.options.leaseMs,
    };
  }

  /**
   * Renews a lease every third of leaseMs; says once when it was lost. `renewedAt` is when the
   * store last confirmed it (a lease not confirmed for half of leaseMs may have lapsed unnoticed
   * while the database was away, and is not handed a slot).
   */
  private keepRenewed(lease: Lease, sending: boolean, onLost: () => void): { timer: NodeJS.Timeout; renewedAt: () => number } {
    const leaseMs = this.options.leaseMs;
    let lost = false;
    let renewedAt = this.clock.now();
    const timer = setInterval(() => {
      this.spool.renew(lease, leaseMs, sending).then(
        (held) => {
          if (held) renewedAt = this.clock.now();
          else if (!lost) {
            lost = true;
            onLost();
          }
        },
        () => undefined, // database away: the next renewal tries again
      );
    }, Math.max(100, Math.floor(leaseMs / 3)));
    timer.unref();
    return { timer, renewedAt: () => (lost ? 0 : renewedAt) };
  }

  private fresh(renewedAt: number): boolean {
    return this.clock.now() - renewedAt < this.options.leaseMs / 2;
  }

  /**
   * Starts an attempt. For a promoted standby, resolves once its request to Graph is being written
   * (on the large-message path: once its first request is about to be made), or once the attempt
   * ended without one; for a claimed message, once the attempt ended.
   */
  private dispatch(lease: Lease, standbyStart?: PromotedStandby): Promise<void> {
    const { entry } = lease;
    let left!: () => void;
    const leaving = new Promise<void>((resolve) => {
      left = resolve;
    });
    const { timer: renewal, renewedAt } = this.keepRenewed(lease, true, () =>
      this.logger.warn({ event: 'delivery.lease_lost', queueId: entry.id, node: this.options.node }, 'lease lost while the attempt runs; its outcome will not be recorded (another node has the message)'),
    );
    const done = (async () => {
      let result: AttemptResult;
      try {
        // Only a promoted standby is told apart (it skips the pause read, app.ts); a claimed message is not one.
        result = await this.deps.attempt(entry, standbyStart ? { ...standbyStart, leaving: left } : undefined);
      } catch (err) {
        result = { decision: { action: 'retry', kind: 'transient', reason: `internal error during attempt: ${(err as Error).message}`, retryAfterMs: null, pauseMailbox: false } };
      }
      left();
      const plan = planSettlement(entry, result, this.clock.now(), this.options, this.deps.random);
      if (plan.pauseMailboxUntil !== null) {
        this.notePause(entry.mailbox, plan.pauseMailboxUntil);
        await this.spool.pauseMailbox(entry.mailbox, plan.pauseMailboxUntil).catch((err: Error) => {
          this.logger.error({ event: 'delivery.pause_not_shared', mailbox: entry.mailbox, err: err.message }, 'could not share a Retry-After pause with the cluster');
        });
      }
      clearInterval(renewal);
      // This request has ended, so its slot is this node's to pass on: a standby message of the
      // mailbox starts now, and the settle below tells the database (which counts the slot under
      // this lease until then, under the promoted one after).
      // Only while this lease is known to hold its slot (confirmed within half of leaseMs): a lease
      // that lapsed unnoticed may have had its slot refilled by another node already.
      const mayPass = this.running && plan.pauseMailboxUntil === null && this.pausedUntil(entry.mailbox) <= this.clock.now() && this.fresh(renewedAt());
      const promoted = mayPass ? this.takeStandby(entry.mailbox) : null;
      if (promoted) await this.untilLeaving(this.dispatch(promoted.lease, promoted.content ? { content: promoted.content } : {}));
      return (await this.record(lease, plan, result, promoted?.lease ?? null)) || promoted !== null;
    })()
      .catch(() => false)
      .then((handedOver) => {
        clearInterval(renewal);
        this.inFlight.delete(entry.id);
        // A slot passed on to the next message is not free: a claim now would only hold the
        // mailbox's row lock that the other slots' hand-overs wait for.
        if (!handedOver) this.pump();
        return this.releaseIdleStandby(entry.mailbox);
      });
    this.inFlight.set(entry.id, { lease, done });
    return leaving;
  }

  /**
   * The outcome of a request is recorded after the promoted request that follows it has been
   * written: a write to the database wakes its backend, and the kernel ran that backend's work
   * (1-3 ms for settle_and_claim) before the rest of this loop turn, which held the next request
   * back (bench figure 8, traced per step: the query's write took 1 ms on average, p90 2.5 ms,
   * right inside the turn undici waits before reusing a keep-alive socket). Bounded by
   * handOverWaitMs: the lease just ended is no longer renewed, and a promoted attempt that waits
   * for a token must not keep the outcome from the database for long.
   */
  private async untilLeaving(leaving: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const bound = this.options.handOverWaitMs ?? HANDOVER_WAIT_MS;
    await Promise.race([leaving, new Promise<void>((resolve) => (timer = setTimeout(resolve, bound)))]);
    clearTimeout(timer);
  }

  /** The mailbox's next standby lease still known to hold (stale ones are dropped: they lapse and go to another node). */
  private takeStandby(mailbox: string): { lease: Lease; content: Promise<Buffer> | undefined } | null {
    const held = this.standby.get(mailbox);
    let first = held?.shift();
    while (first && !this.fresh(first.renewedAt())) {
      clearInterval(first.renewal);
      first = held?.shift();
    }
    if (held && held.length === 0) this.standby.delete(mailbox);
    if (!first) return null;
    clearInterval(first.renewal);
    return { lease: first.lease, content: first.content };
  }

  /** Every standby lease of the mailbox, stale or not (to hand back). */
  private takeAllStandby(mailbox: string): Lease[] {
    const held = this.standby.get(mailbox) ?? [];
    this.standby.delete(mailbox);
    for (const spare of held) clearInterval(spare.renewal);
    return held.map((spare) => spare.lease);
  }

  private addStandby(lease: Lease): void {
    const { mailbox } = lease.entry;
    // A standby lease that lapses is simply taken by another node; nothing was sent under it.
    const { timer: renewal, renewedAt } = this.keepRenewed(lease, false, () => this.forgetStandby(lease));
    // A small standby message is read while it waits, so its request starts without a round trip (read
    // when promoted, next to the settle of the request before it, it took 2-3 ms of that gap); the
    // shared spool reads it with the lease itself.
    const content = lease.content ? Promise.resolve(lease.content) : lease.entry.size <= STANDBY_READ_AHEAD_BYTES ? this.spool.readMessage(lease.entry.id) : undefined;
    content?.catch(() => undefined); // not unhandled while it waits; a failed read is read again by the attempt
    const held = this.standby.get(mailbox) ?? [];
    held.push({ lease, renewal, renewedAt, content });
    this.standby.set(mailbox, held);
  }

  private forgetStandby(lease: Lease): void {
    const held = this.standby.get(lease.entry.mailbox);
    const index = held?.findIndex((s) => s.lease.token === lease.token) ?? -1;
    if (!held || index < 0) return;
    clearInterval(held[index]!.renewal);
    held.splice(index, 1);
    if (held.length === 0) this.standby.delete(lease.entry.mailbox);
  }

  /** Standby leases serve only a node that still sends to the mailbox; otherwise they go back unsent. */
  private async releaseIdleStandby(mailbox: string): Promise<void> {
    if (!this.standby.has(mailbox)) return;
    for (const { lease } of this.inFlight.values()) if (lease.entry.mailbox === mailbox) return;
    await this.handBack(this.takeAllStandby(mailbox));
  }

  /**
   * Writes the outcome under the lease, retrying while the database is away (the lease fences late
   * writes). True when the slot was handed straight to the mailbox's next message.
   */
  private async record(lease: Lease, plan: SettlementPlan, result: AttemptResult, promoted: Lease | null): Promise<boolean> {
    const { entry } = lease;
    const giveUpAt = this.clock.now() + SETTLE_GIVE_UP_MS;
    for (;;) {
      try {
        // While running, the freed slot passes straight to the mailbox's next due message (pg-spool
        // settleAndClaim), or to the standby message already promoted; a new one goes on standby.
        const handOver =
          (this.running || promoted) && this.spool.settleAndClaim
            ? await this.spool.settleAndClaim(lease, plan.settlement, this.options.node, this.limits(), this.clock.now(), { ...(promoted ? { promote: promoted } : {}), standby: this.running ? STANDBY_PER_SLOT : 0 })
            : null;
        const held = handOver ? handOver.held : await this.spool.settle(lease, plan.settlement);
        let next = handOver?.next ?? [];
        if (!this.running && (next.length > 0 || (handOver?.standby.length ?? 0) > 0)) {
          // stop() began while the outcome was written: like a late claim, the new leases go back unsent.
          await this.handBack([...next, ...(handOver?.standby ?? [])]);
          next = [];
        } else {
          for (const spare of handOver?.standby ?? []) this.addStandby(spare);
        }
        for (const lease of next) void this.dispatch(lease);
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
    // Nothing was sent under a standby lease: they go back at once, not after leaseTimeout.
    const spare = [...this.standby.keys()].flatMap((mailbox) => this.takeAllStandby(mailbox));
    await Promise.race([this.handBack(spare), expired]);
    // The claim round in progress first: it hands back what it took, or (claimed before the stop)
    // has dispatched its attempts, which are then waited for with the rest.
    await Promise.race([this.pumping, expired]);
    await Promise.race([Promise.allSettled([...this.inFlight.values()].map((f) => f.done)), expired]);
    clearTimeout(timeout);
    return { unfinished: this.inFlight.size };
  }
}
