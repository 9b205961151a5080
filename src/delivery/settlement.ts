/**
 * What an attempt's result means for the message: the one decision table behind both schedulers
 * (the single-node Scheduler and the cluster's ClaimLoop). Pure, with the clock passed in: what the
 * spool records, whether the mailbox pauses (Retry-After), and the one log event of the step.
 */
import type { SpoolEntry } from '../spool/entry.js';
import type { Settlement } from '../spool/spool.js';
import type { AttemptResult } from './attempt.js';
import { nextAttemptAt, type BackoffPolicy } from './backoff.js';

export type SettledOutcome = 'delivered' | 'deferred' | 'failed' | 'expired' | 'postponed';

export interface SettlementPlan {
  outcome: SettledOutcome;
  settlement: Settlement;
  /** No request to the mailbox before this time (Graph's Retry-After), or null. */
  pauseMailboxUntil: number | null;
  log: { level: 'debug' | 'info' | 'warn' | 'error'; fields: Record<string, unknown>; message: string };
}

export function planSettlement(
  entry: SpoolEntry,
  result: AttemptResult,
  now: number,
  options: { backoff: BackoffPolicy; maxQueueLifetimeMs: number },
  random?: () => number,
  /** Set when this attempt was an operator's `queue retry`: when its automatic attempt was due. */
  manualRetryOf?: number,
): SettlementPlan {
  const decision = result.decision;
  const attempts = entry.attempts + 1;
  const graph = stripUndefined({ status: result.status, code: result.code, requestId: result.requestId });
  const retryAfterMs = decision.action === 'retry' ? decision.retryAfterMs : null;
  // An operator's `queue retry` is not a failure: it keeps the automatic schedule it interrupted and
  // adds no backoff step (issue 12, item 11). Graph's Retry-After still wins.
  let next = nextAttemptAt(now, manualRetryOf === undefined ? attempts : entry.attempts, retryAfterMs, options.backoff, random);
  if (manualRetryOf !== undefined && manualRetryOf > now && retryAfterMs === null) next = manualRetryOf;
  // The pause holds whatever becomes of this message (even one that expires now): a shorter
  // Retry-After (a 503's) never shortens a longer one already in force (issue 12, item 2) - callers
  // keep the later of the two.
  const pauseMailboxUntil = decision.action === 'retry' && decision.pauseMailbox ? next : null;

  if (decision.action === 'postpone') {
    // Not an attempt: nothing was sent, so nothing about it is recorded.
    return {
      outcome: 'postponed',
      settlement: { kind: 'postponed', untilMs: decision.untilMs },
      pauseMailboxUntil: null,
      log: { level: 'debug', fields: { event: 'delivery.postponed', queueId: entry.id, mailbox: entry.mailbox, untilMs: decision.untilMs }, message: 'mailbox paused by Retry-After' },
    };
  }
  if (decision.action === 'delivered') {
    const fields = {
      event: 'delivery.delivered',
      queueId: entry.id,
      messageId: entry.messageId,
      mailbox: entry.mailbox,
      recipients: entry.envelope.rcptTo.length,
      size: entry.size,
      attempts,
      requestId: result.requestId,
      queueTimeMs: now - entry.receivedAt,
    };
    return { outcome: 'delivered', settlement: { kind: 'delivered' }, pauseMailboxUntil: null, log: { level: 'info', fields, message: 'delivered' } };
  }
  if (decision.action === 'fail' || (decision.action === 'retry' && now - (entry.requeuedAt ?? entry.receivedAt) >= options.maxQueueLifetimeMs)) {
    const reason = decision.action === 'fail' ? decision.reason : `queue lifetime of ${Math.round(options.maxQueueLifetimeMs / 3_600_000)}h exceeded; last error: ${decision.reason}`;
    const failed: SpoolEntry = { ...entry, attempts, failedAt: now, failReason: reason, lastError: { at: now, kind: 'permanent', message: reason, ...graph } };
    return {
      outcome: decision.action === 'fail' ? 'failed' : 'expired',
      settlement: { kind: 'failed', entry: failed },
      pauseMailboxUntil,
      log: { level: 'error', fields: { event: 'delivery.failed', queueId: entry.id, mailbox: entry.mailbox, attempts, reason, ...graph }, message: 'delivery failed permanently' },
    };
  }
  const kind = decision.action === 'retry' ? decision.kind : 'transient';
  const reason = decision.action === 'retry' ? decision.reason : 'token refresh requested';
  const deferred: SpoolEntry = { ...entry, attempts, nextAttemptAt: next, lastError: { at: now, kind, message: reason, ...graph } };
  const fields = { event: 'delivery.deferred', queueId: entry.id, mailbox: entry.mailbox, attempts, reason, retryInMs: next - now, ...graph };
  return {
    outcome: 'deferred',
    settlement: { kind: 'deferred', entry: deferred },
    pauseMailboxUntil,
    log:
      kind === 'operator'
        ? { level: 'error', fields: { ...fields, operatorActionRequired: true }, message: 'delivery deferred: needs an administrator' }
        : { level: 'warn', fields, message: 'delivery deferred' },
  };
}

function stripUndefined<T extends Record<string, unknown>>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
