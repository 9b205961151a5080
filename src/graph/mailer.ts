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
import { heldOutcome, type CallOptions, type GraphCall, type GraphOutcome } from './graph-call.js';
import { RequestHeldError, type HttpTransport } from './http-transport.js';
import { sendLargeMessage, type LargeMessageHooks } from './large-message.js';
import { parseRetryAfterMs } from './retry-after.js';

export interface GraphMailer {
  /** `mayStart` is asked right before the request leaves (false: held back, nothing sent). */
  sendMime(mailbox: string, mime: Buffer, accessToken: string, mayStart?: () => boolean): Promise<GraphOutcome>;
  /** The draft + upload-session path for messages over one request's size (large-message.ts). */
  sendLarge(mailbox: string, file: string, size: number, accessToken: string, hooks: LargeMessageHooks): Promise<GraphOutcome>;
  /** Deletes a draft the large path gave up (the clean-up queue, draft-cleanup.ts). */
  deleteDraft(mailbox: string, draftId: string, accessToken: string, mayStart?: () => boolean): Promise<GraphOutcome>;
}

export class HttpGraphMailer implements GraphMailer, GraphCall {
  constructor(
    private readonly endpoint: string,
    private readonly http: HttpTransport,
    private readonly now: () => number = Date.now,
  ) {}

  async call(
    method: string,
    pathOrUrl: string,
    accessToken: string | null,
    options: CallOptions = {},
  ): Promise<{ outcome: GraphOutcome; json: unknown }> {
    const url = /^https?:\/\//.test(pathOrUrl) ? pathOrUrl : `${this.endpoint.replace(/\/+$/, '')}/v1.0${pathOrUrl}`;
    try {
      // A fresh body per request: a retried request never re-sends a consumed stream.
      const response = await this.http.request(url, {
        method,
        headers: {
          ...(accessToken ? { authorization: `Bearer ${accessToken}` } : {}),
          ...(options.contentType ? { 'content-type': options.contentType } : {}),
          'client-request-id': randomUUID(),
          'return-client-request-id': 'true',
          ...(options.headers ?? {}),
        },
        ...(options.body !== undefined ? { body: options.body } : {}),
        ...(options.mayStart ? { mayStart: options.mayStart } : {}),
      });
      const error = response.status >= 300 ? parseGraphError(response.body, response.headers) : { requestId: response.headers['request-id'] };
      let json: unknown = null;
      if (response.status < 300 && response.body.length > 0 && (response.headers['content-type'] ?? '').includes('json')) {
        try {
          json = JSON.parse(response.body.toString('utf8'));
        } catch {
          json = null;
        }
      }
      return { outcome: { kind: 'http', status: response.status, ...error, retryAfterMs: parseRetryAfterMs(response.headers['retry-after'], this.now()) }, json };
    } catch (err) {
      if (err instanceof RequestHeldError) return { outcome: heldOutcome(), json: null };
      const e = err as NodeJS.ErrnoException;
      return { outcome: { kind: 'network', message: e.message, ...(e.code ? { code: e.code } : {}) }, json: null };
    }
  }

  async sendMime(mailbox: string, mime: Buffer, accessToken: string, mayStart?: () => boolean): Promise<GraphOutcome> {
    // MIME form of sendMail: the whole message base64-encoded as text/plain (graph-api-facts §1.3).
    // The mailbox is one encoded path segment, never a path (a peer allowed traversal: field-lessons.md).
    const { outcome } = await this.call('POST', `/users/${encodeURIComponent(mailbox)}/sendMail`, accessToken, { body: mime.toString('base64'), contentType: 'text/plain', ...(mayStart ? { mayStart } : {}) });
    return outcome;
  }

  async deleteDraft(mailbox: string, draftId: string, accessToken: string, mayStart?: () => boolean): Promise<GraphOutcome> {
    const { outcome } = await this.call('DELETE', `/users/${encodeURIComponent(mailbox)}/messages/${encodeURIComponent(draftId)}`, accessToken, mayStart ? { mayStart } : {});
    return outcome;
  }

  sendLarge(mailbox: string, file: string, size: number, accessToken: string, hooks: LargeMessageHooks): Promise<GraphOutcome> {
    return sendLargeMessage(this, mailbox, file, size, accessToken, hooks);
  }
}
