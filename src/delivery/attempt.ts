/**
 * One delivery attempt: token -> spooled MIME -> sendMail -> classification. A 401 forces exactly
 * one token refresh and one more request; a second 401 waits for a person (DESIGN.md).
 */
import { isHeld, type GraphOutcome } from '../graph/graph-call.js';
import type { GraphMailer } from '../graph/mailer.js';
import { TokenError, type TokenProvider } from '../graph/token-provider.js';
import type { SpoolEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';
import { SINGLE_REQUEST_LIMIT, type DraftTracker, type UploadPacer } from '../graph/large-message.js';
import { classifyOutcome, type Decision } from './classify.js';

/**
 * A single sendMail request is limited to about 4 MB (graph-api-facts §1.5); base64 makes 3 MiB of
 * MIME exactly 4 MiB. Larger messages take the draft + upload-session path.
 */
export const MAX_SINGLE_REQUEST_MIME_BYTES = SINGLE_REQUEST_LIMIT;

export interface AttemptDeps {
  tokens: TokenProvider;
  mailer: GraphMailer;
  spool: Spool;
  /**
   * When the mailbox may next be sent to (a Retry-After received while this attempt was getting
   * its token). Checked right before every request, so no request leaves after we know to wait.
   */
  pausedUntil?: (mailbox: string) => number;
  /** Brings pausedUntil up to date from a shared store before the first request (the cluster's). */
  refreshPause?: (mailbox: string) => Promise<void>;
  now?: () => number;
  /** The message's draft on the large path (draft-cleanup.ts); without it drafts are neither resumed nor cleaned up. */
  drafts?: (entry: SpoolEntry) => DraftTracker;
  /** The app and mailbox's upload budget (upload-budget.ts). */
  pacer?: (entry: SpoolEntry) => UploadPacer;
  /** The sign-in is delegated (password, deviceCode): hints name the delegated permission type. */
  delegated?: boolean;
  /** The message's bytes, read ahead while it waited on standby (instead of readMessage now). */
  prefetched?: Promise<Buffer>;
  /**
   * Called as a request of this attempt is written (each time: the caller keeps the first). The
   * large-message path asks before each of its requests, so there it is called just before.
   */
  leaving?: () => void;
}

/** Keeps nothing: for callers without a clean-up queue (a one-off send). */
const untracked: DraftTracker = { current: () => null, created: async () => undefined, progress: () => undefined, discard: async () => undefined, sent: async () => undefined };

function postponed(entry: SpoolEntry, deps: AttemptDeps): AttemptResult | null {
  const until = deps.pausedUntil?.(entry.mailbox) ?? 0;
  return until > (deps.now ?? Date.now)() ? { decision: { action: 'postpone', untilMs: until } } : null;
}

export interface AttemptResult {
  decision: Decision;
  status?: number;
  code?: string;
  requestId?: string;
}

function tokenFailure(err: unknown): AttemptResult {
  const e = TokenError.from(err, true);
  const reason = `token acquisition failed${e.aadsts ? ` (AADSTS${e.aadsts})` : ''}: ${e.message}`;
  return { decision: { action: 'retry', kind: e.transient ? 'transient' : 'operator', reason, retryAfterMs: null, pauseMailbox: false }, code: e.aadsts ? `AADSTS${e.aadsts}` : e.errorCode };
}

function resultOf(outcome: GraphOutcome, decision: Decision): AttemptResult {
  if (outcome.kind === 'network') return { decision, ...(outcome.code ? { code: outcome.code } : {}) };
  return { decision, status: outcome.status, ...(outcome.code ? { code: outcome.code } : {}), ...(outcome.requestId ? { requestId: outcome.requestId } : {}) };
}

export async function attemptDelivery(entry: SpoolEntry, deps: AttemptDeps): Promise<AttemptResult> {
  let token: string;
  try {
    token = await deps.tokens.getToken();
  } catch (err) {
    return tokenFailure(err);
  }
  // Over one request's size the message goes as a draft plus upload sessions, streamed from the spool file.
  const large = entry.size > MAX_SINGLE_REQUEST_MIME_BYTES;
  // The shared pause is read alongside the message, not after it: both are the last thing before the
  // request, and on a shared spool that is one round trip to the database instead of two between
  // one request to the mailbox and the next (bench figure 8).
  const pauseRead = deps.refreshPause?.(entry.mailbox);
  let mime: Buffer | null = null;
  if (!large) {
    try {
      // A read ahead that failed (the database away for a moment) is simply read again now.
      mime = await (deps.prefetched?.catch(() => deps.spool.readMessage(entry.id)) ?? deps.spool.readMessage(entry.id));
    } catch (err) {
      await pauseRead;
      return { decision: { action: 'retry', kind: 'operator', reason: `cannot read the spooled message: ${(err as Error).message}`, retryAfterMs: null, pauseMailbox: false } };
    }
  }
  const now = deps.now ?? Date.now;
  // Asked before each request and again as its first byte leaves (http-transport.ts), so no request
  // reaches the mailbox once a Retry-After for it is known, on any path (issue 12, items 1-2).
  const mayStart = () => {
    if (postponed(entry, deps) !== null) return false;
    deps.leaving?.();
    return true;
  };
  const drafts = large ? (deps.drafts?.(entry) ?? untracked) : untracked;
  const pacer = large ? deps.pacer?.(entry) : undefined;
  const send = (accessToken: string) =>
    mime
      ? deps.mailer.sendMime(entry.mailbox, mime, accessToken, mayStart)
      : deps.spool.withMessageFile(entry.id, 'queue', (file) =>
          deps.mailer.sendLarge(entry.mailbox, file, entry.size, accessToken, { mayProceed: mayStart, drafts, ...(pacer ? { pacer } : {}), now, delegated: deps.delegated === true }),
        );
  // Held back before anything left: not an attempt. Until the pause ends, or until the upload budget has room.
  const held = (o: GraphOutcome): AttemptResult | null => {
    if (!isHeld(o)) return null;
    const retryAfterMs = o.kind === 'http' ? o.retryAfterMs : null;
    return { decision: { action: 'postpone', untilMs: retryAfterMs !== null ? now() + retryAfterMs : Math.max(now(), deps.pausedUntil?.(entry.mailbox) ?? 0) } };
  };
  await pauseRead;
  const waitFirst = postponed(entry, deps);
  if (waitFirst) return waitFirst;
  let outcome = await send(token);
  let decision = classifyOutcome(outcome);
  const heldFirst = held(outcome);
  if (heldFirst) return heldFirst;
  if (decision.action !== 'refresh-token') return finish(outcome, decision, drafts);
  try {
    token = await deps.tokens.getToken({ forceRefresh: true });
  } catch (err) {
    return tokenFailure(err);
  }
  const waitAgain = postponed(entry, deps);
  if (waitAgain) return waitAgain;
  outcome = await send(token);
  const heldAgain = held(outcome);
  if (heldAgain) return heldAgain;
  decision = classifyOutcome(outcome);
  if (decision.action === 'refresh-token') {
    decision = {
      action: 'retry',
      kind: 'operator',
      reason: 'HTTP 401 even with a freshly issued token - check that the app has Mail.Send (application) with admin consent and that graph.endpoint matches the cloud of graph.authorityHost',
      retryAfterMs: null,
      pauseMailbox: false,
    };
  }
  return finish(outcome, decision, drafts);
}

/** A message that failed for good gives its draft up (the clean-up queue deletes it). */
async function finish(outcome: GraphOutcome, decision: Decision, drafts: DraftTracker): Promise<AttemptResult> {
  if (decision.action === 'fail') await drafts.discard();
  return resultOf(outcome, decision);
}
