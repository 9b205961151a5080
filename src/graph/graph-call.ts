/** What one Graph request answers, and the one-request interface the mailer and the large-message path share. */

export type GraphOutcome =
  | { kind: 'http'; status: number; code?: string; message?: string; requestId?: string; retryAfterMs: number | null }
  | { kind: 'network'; message: string; code?: string };

/** One Graph request: a path under /v1.0 (or a full URL, for upload sessions), optional bearer token. */
export interface GraphCall {
  call(
    method: string,
    pathOrUrl: string,
    accessToken: string | null,
    options?: { body?: string | Buffer; contentType?: string; headers?: Record<string, string> },
  ): Promise<{ outcome: GraphOutcome; json: unknown }>;
}
