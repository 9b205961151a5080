/**
 * The Graph boundary for sending: one request per call, no retries of its own (the spool and the
 * scheduler own retrying, so Retry-After and the 4-in-flight limit are honoured in one place).
 * This is why @microsoft/microsoft-graph-client is not used: its RetryHandler re-sends sendMail on
 * 429/503/504 behind the spool's back, its AuthenticationHandler drops the bearer token for hosts
 * it does not know (an emulator, a private endpoint), proxies need an undici dispatcher its typings
 * lack, and it has had no release since November 2023 (graph-api-facts §6).
 */
import { randomUUID } from 'node:crypto';
import { parseGraphError } from './graph-error.js';
import type { HttpTransport } from './http-transport.js';
import { parseRetryAfterMs } from './retry-after.js';

export type GraphOutcome =
  | { kind: 'http'; status: number; code?: string; message?: string; requestId?: string; retryAfterMs: number | null }
  | { kind: 'network'; message: string; code?: string };

export interface GraphMailer {
  sendMime(mailbox: string, mime: Buffer, accessToken: string): Promise<GraphOutcome>;
}

/** /users/{id|upn}/sendMail with the mailbox as one encoded path segment (never a path: field-lessons.md). */
export function sendMailUrl(endpoint: string, mailbox: string): string {
  return `${endpoint.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`;
}

export class HttpGraphMailer implements GraphMailer {
  constructor(
    private readonly endpoint: string,
    private readonly http: HttpTransport,
    private readonly now: () => number = Date.now,
  ) {}

  async sendMime(mailbox: string, mime: Buffer, accessToken: string): Promise<GraphOutcome> {
    try {
      // MIME form of sendMail: the whole message base64-encoded as text/plain (graph-api-facts §1.3).
      // A fresh body string per attempt: a retried request never re-sends a consumed stream.
      const response = await this.http.request(sendMailUrl(this.endpoint, mailbox), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${accessToken}`,
          'content-type': 'text/plain',
          'client-request-id': randomUUID(),
          'return-client-request-id': 'true',
        },
        body: mime.toString('base64'),
      });
      const error = response.status >= 300 ? parseGraphError(response.body, response.headers) : { requestId: response.headers['request-id'] };
      return {
        kind: 'http',
        status: response.status,
        ...error,
        retryAfterMs: parseRetryAfterMs(response.headers['retry-after'], this.now()),
      };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { kind: 'network', message: e.message, ...(e.code ? { code: e.code } : {}) };
    }
  }
}
