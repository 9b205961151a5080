/**
 * Claims, leases, pauses and send windows kept in memory, for a spool only one process uses (the
 * file-system spool): the same contract as the database's (spool.ts), checked by the same
 * conformance suite. Concurrent claims cannot hand out one message twice: everything after the
 * listing runs synchronously.
 */
import { randomUUID } from 'node:crypto';
import type { SpoolEntry } from './entry.js';
import type { ClaimLimits, Lease, Settlement, Spool } from './spool.js';

const MINUTE = 60_000;
const DAY = 86_400_000;

type Store = Pick<Spool, 'list' | 'update' | 'remove' | 'moveToFailed'>;

export class LocalLeases {
  private readonly leases = new Map<string, { token: string; mailbox: string; until: number }>();
  private readonly pauses = new Map<string, number>();
  private readonly sends = new Map<string, Array<{ at: number; rcpts: number; token: string }>>();

  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  private alive(id: string, at: number): boolean {
    const lease = this.leases.get(id);
    return lease !== undefined && lease.until >= at;
  }

  /** Whether a live lease holds the message (queue commands wait for its outcome). */
  isLeased(id: string): boolean {
    return this.alive(id, this.now());
  }

  async claim(max: number, limits: ClaimLimits, at = this.now()): Promise<Lease[]> {
    if (max <= 0) return [];
    const entries = await this.store.list('queue');
    const now = this.now();
    const due = entries.filter((e) => !e.held && e.nextAttemptAt <= at && !this.alive(e.id, now)).sort((a, b) => a.nextAttemptAt - b.nextAttemptAt || (a.id < b.id ? -1 : 1));
    const inFlight = new Map<string, number>();
    for (const lease of this.leases.values()) if (lease.until >= now) inFlight.set(lease.mailbox, (inFlight.get(lease.mailbox) ?? 0) + 1);
    const claimed: Lease[] = [];
    for (const entry of due) {
      if (claimed.length >= max) break;
      if ((this.pauses.get(entry.mailbox) ?? 0) > now) continue;
      if ((inFlight.get(entry.mailbox) ?? 0) >= limits.maxInFlightPerMailbox) continue;
      const window = (this.sends.get(entry.mailbox) ?? []).filter((s) => s.at > now - DAY);
      this.sends.set(entry.mailbox, window);
      if (limits.messagesPerMinute > 0 && window.filter((s) => s.at > now - MINUTE).length >= limits.messagesPerMinute) continue;
      const day = window.reduce((sum, s) => sum + s.rcpts, 0);
      const rcpts = entry.envelope.rcptTo.length;
      if (limits.recipientsPerDay > 0 && day > 0 && day + rcpts > limits.recipientsPerDay) continue;
      const token = randomUUID();
      this.leases.set(entry.id, { token, mailbox: entry.mailbox, until: now + limits.leaseMs });
      window.push({ at: now, rcpts, token });
      inFlight.set(entry.mailbox, (inFlight.get(entry.mailbox) ?? 0) + 1);
      claimed.push({ entry, token });
    }
    return claimed;
  }

  private holds(lease: Lease): boolean {
    return this.leases.get(lease.entry.id)?.token === lease.token;
  }

  async renew(lease: Lease, leaseMs: number): Promise<boolean> {
    const current = this.leases.get(lease.entry.id);
    if (current?.token !== lease.token) return false;
    current.until = this.now() + leaseMs;
    return true;
  }

  async settle(lease: Lease, outcome: Settlement): Promise<boolean> {
    if (!this.holds(lease)) return false;
    const { entry } = lease;
    if (outcome.kind === 'delivered') await this.store.remove(entry.id);
    else if (outcome.kind === 'failed') await this.store.moveToFailed(outcome.entry);
    else if (outcome.kind === 'deferred') await this.store.update(outcome.entry);
    else {
      await this.store.update({ ...entry, nextAttemptAt: outcome.untilMs });
      const window = this.sends.get(entry.mailbox) ?? [];
      this.sends.set(entry.mailbox, window.filter((s) => s.token !== lease.token));
    }
    this.leases.delete(entry.id);
    return true;
  }

  pause(mailbox: string, untilMs: number): void {
    this.pauses.set(mailbox, Math.max(this.pauses.get(mailbox) ?? 0, untilMs));
  }

  /** An operator removed or replaced the message: its lease, if any, no longer counts. */
  forget(entry: Pick<SpoolEntry, 'id'>): void {
    this.leases.delete(entry.id);
  }
}
