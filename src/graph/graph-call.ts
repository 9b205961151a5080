/** What one Graph request answers, and the one-request interface the mailer and the large-message path share. */

export type GraphOutcome =
  | { kind: 'http'; status: number; code?: string; message?: string; requestId?: string; retryAfterMs: number | null }
  | { kind: 'network'; message: string; code?: string };

/**
 * The code the large-message path puts on a 404 that came from its own draft or upload session
 * (expired, deleted in the mailbox) rather than from the mailbox: classified as transient.
 */
export const LARGE_PATH_LOST = 'RelayDraftOrSessionLost';

/**
 * Not a Graph answer: the relay held the request back (the mailbox is paused by a Retry-After, or
 * its upload budget is spent) before any byte of it was sent. `retryAfterMs` says how long to wait
 * when the relay knows (the upload budget); null: until the mailbox's pause ends.
 */
export const RELAY_PAUSED = 'RelayPaused';
export const heldOutcome = (retryAfterMs: number | null = null): GraphOutcome => ({ kind: 'http', status: 429, code: RELAY_PAUSED, retryAfterMs });
export const isHeld = (o: GraphOutcome): boolean => o.kind === 'http' && o.code === RELAY_PAUSED;

export interface CallOptions {
  body?: string | Buffer;
  contentType?: string;
  headers?: Record<string, string>;
  /** Asked right before the request's first byte leaves (http-transport.ts): false holds it back. */
  mayStart?: () => boolean;
}

/** One Graph request: a path under /v1.0 (or a full URL, for upload sessions), optional bearer token. */
export interface GraphCall {
  call(method: string, pathOrUrl: string, accessToken: string | null, options?: CallOptions): Promise<{ outcome: GraphOutcome; json: unknown }>;
}
