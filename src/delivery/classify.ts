/**
 * What a Graph answer means for the message, as a table (DESIGN.md habit 2). HTTP inverts SMTP:
 * 429/408/5xx and network errors are transient; most other 4xx are permanent; configuration and
 * permission problems (403, unknown mailbox) wait for a person instead of failing the queue.
 * Anything not in the table is retried: an unknown outcome must never lose mail.
 */
import { LARGE_PATH_LOST, type GraphOutcome } from '../graph/graph-call.js';

export type Decision =
  | { action: 'delivered' }
  | { action: 'refresh-token' }
  | { action: 'retry'; kind: 'transient' | 'operator'; reason: string; retryAfterMs: number | null; pauseMailbox: boolean }
  | { action: 'fail'; reason: string }
  /** Not attempted: the mailbox is paused by an earlier Retry-After; try again then, not counted as an attempt. */
  | { action: 'postpone'; untilMs: number };

interface Row {
  /** Human-readable condition, also the test title. */
  when: string;
  matches: (status: number, code: string | undefined, message: string | undefined) => boolean;
  decide: (o: Extract<GraphOutcome, { kind: 'http' }>) => Decision;
}

const retry = (kind: 'transient' | 'operator', reason: string, o: { retryAfterMs: number | null }, pauseMailbox: boolean): Decision => ({
  action: 'retry',
  kind,
  reason,
  retryAfterMs: o.retryAfterMs,
  pauseMailbox,
});

const describe = (o: Extract<GraphOutcome, { kind: 'http' }>) => `HTTP ${o.status}${o.code ? ` ${o.code}` : ''}${o.message ? `: ${o.message}` : ''}`;

export const CLASSIFICATION_TABLE: readonly Row[] = [
  { when: '2xx means Graph accepted the message', matches: (s) => s >= 200 && s < 300, decide: () => ({ action: 'delivered' }) },
  { when: '401 forces one token refresh', matches: (s) => s === 401, decide: () => ({ action: 'refresh-token' }) },
  {
    when: '403 ErrorSendAsDenied waits for a Send As grant',
    matches: (s, c) => s === 403 && c === 'ErrorSendAsDenied',
    decide: (o) => retry('operator', `${describe(o)} - the app/mailbox lacks Send As rights for the From address`, o, false),
  },
  {
    when: '403 (access denied, policy scope) waits for a permission fix',
    matches: (s) => s === 403,
    decide: (o) => retry('operator', `${describe(o)} - grant Mail.Send (application) with admin consent, and check application access policies / RBAC scope`, o, false),
  },
  {
    // The large path's own 404s (a draft or upload session that expired or vanished) say nothing
    // about the mailbox: large-message.ts already tried a fresh draft; the next attempt does again.
    when: '404 on the large path (draft or upload session gone) is retried with a fresh draft',
    matches: (s, c) => s === 404 && c === LARGE_PATH_LOST,
    decide: (o) => retry('transient', `${describe(o)} - the draft or upload session was gone; the next attempt starts a fresh draft`, o, false),
  },
  {
    when: '404 (unknown mailbox, not enabled for REST) waits for a configuration fix',
    matches: (s) => s === 404,
    decide: (o) => retry('operator', `${describe(o)} - check graph.mailbox: the mailbox must exist in this tenant and be hosted in Exchange Online`, o, false),
  },
  { when: '408 request timeout is transient', matches: (s) => s === 408, decide: (o) => retry('transient', describe(o), o, false) },
  // 409 Conflict and 423 Locked describe a state conflict and a locked resource (Graph's error
  // reference, graph-api-facts §9): the same request can succeed later, so they are not failures.
  { when: '409 conflict and 423 locked are transient', matches: (s) => s === 409 || s === 423, decide: (o) => retry('transient', describe(o), o, o.retryAfterMs !== null) },
  { when: '429 throttling pauses the mailbox for Retry-After', matches: (s) => s === 429, decide: (o) => retry('transient', describe(o), o, true) },
  {
    when: '413 and "maximum request length" are permanent: the message cannot fit a request',
    matches: (s, c, m) => s === 413 || (s === 400 && /maximum request length/i.test(m ?? '')),
    decide: (o) => ({ action: 'fail', reason: `${describe(o)} - message too large for a single Graph request` }),
  },
  { when: '5xx is transient; Retry-After pauses the mailbox', matches: (s) => s >= 500, decide: (o) => retry('transient', describe(o), o, o.retryAfterMs !== null) },
  { when: 'other 4xx are permanent', matches: (s) => s >= 400 && s < 500, decide: (o) => ({ action: 'fail', reason: describe(o) }) },
];

export function classifyOutcome(outcome: GraphOutcome): Decision {
  if (outcome.kind === 'network') {
    return { action: 'retry', kind: 'transient', reason: `network error: ${outcome.code ?? ''} ${outcome.message}`.trim(), retryAfterMs: null, pauseMailbox: false };
  }
  const row = CLASSIFICATION_TABLE.find((r) => r.matches(outcome.status, outcome.code, outcome.message));
  return row ? row.decide(outcome) : retry('transient', `unexpected ${describe(outcome)}`, outcome, false);
}
