import { describe, expect, it } from 'vitest';
import { classifyOutcome, CLASSIFICATION_TABLE } from '../../src/delivery/classify.js';
import { LARGE_PATH_LOST, type GraphOutcome } from '../../src/graph/graph-call.js';

const http = (status: number, code?: string, message?: string, retryAfterMs: number | null = null): GraphOutcome => ({ kind: 'http', status, retryAfterMs, ...(code ? { code } : {}), ...(message ? { message } : {}) });

describe('Graph outcome classification (one test per table row)', () => {
  it('has a row for each documented case', () => {
    expect(CLASSIFICATION_TABLE.map((r) => r.when)).toHaveLength(12);
  });

  it('2xx means Graph accepted the message', () => {
    expect(classifyOutcome(http(202))).toEqual({ action: 'delivered' });
  });

  it('401 forces one token refresh', () => {
    expect(classifyOutcome(http(401, 'InvalidAuthenticationToken'))).toEqual({ action: 'refresh-token' });
  });

  it('403 ErrorSendAsDenied waits for a Send As grant', () => {
    expect(classifyOutcome(http(403, 'ErrorSendAsDenied'))).toMatchObject({ action: 'retry', kind: 'operator', reason: expect.stringContaining('Send As') });
  });

  it('403 (access denied, policy scope) waits for a permission fix', () => {
    expect(classifyOutcome(http(403, 'ErrorAccessDenied'))).toMatchObject({ action: 'retry', kind: 'operator', reason: expect.stringContaining('Mail.Send') });
  });

  it('404 (unknown mailbox, not enabled for REST) waits for a configuration fix', () => {
    expect(classifyOutcome(http(404, 'MailboxNotEnabledForRESTAPI'))).toMatchObject({ action: 'retry', kind: 'operator' });
    expect(classifyOutcome(http(404, 'ErrorInvalidUser'))).toMatchObject({ action: 'retry', kind: 'operator', reason: expect.stringContaining('graph.mailbox') });
  });

  it('404 on the large path (draft or upload session gone) is retried with a fresh draft', () => {
    expect(classifyOutcome(http(404, LARGE_PATH_LOST, 'upload: ErrorItemNotFound'))).toMatchObject({ action: 'retry', kind: 'transient', reason: expect.stringContaining('fresh draft') });
  });

  it('409 conflict and 423 locked are transient', () => {
    expect(classifyOutcome(http(409, 'ErrorIrresolvableConflict'))).toMatchObject({ action: 'retry', kind: 'transient' });
    expect(classifyOutcome(http(423, 'ErrorItemLocked'))).toMatchObject({ action: 'retry', kind: 'transient' });
    expect(classifyOutcome(http(423, undefined, undefined, 3000))).toMatchObject({ action: 'retry', kind: 'transient', retryAfterMs: 3000, pauseMailbox: true });
  });

  it('408 request timeout is transient', () => {
    expect(classifyOutcome(http(408))).toMatchObject({ action: 'retry', kind: 'transient', pauseMailbox: false });
  });

  it('429 throttling pauses the mailbox for Retry-After', () => {
    expect(classifyOutcome(http(429, 'ApplicationThrottled', undefined, 2128))).toMatchObject({ action: 'retry', kind: 'transient', retryAfterMs: 2128, pauseMailbox: true });
  });

  it('413 and "maximum request length" are permanent: the message cannot fit a request', () => {
    expect(classifyOutcome(http(413))).toMatchObject({ action: 'fail' });
    expect(classifyOutcome(http(400, 'BadRequest', 'The maximum request length supported is 4MB.'))).toMatchObject({ action: 'fail', reason: expect.stringContaining('too large') });
  });

  it('5xx is transient; Retry-After pauses the mailbox', () => {
    expect(classifyOutcome(http(503, 'serviceNotAvailable', undefined, 5000))).toMatchObject({ action: 'retry', kind: 'transient', pauseMailbox: true, retryAfterMs: 5000 });
    expect(classifyOutcome(http(500))).toMatchObject({ action: 'retry', kind: 'transient', pauseMailbox: false });
  });

  it('other 4xx are permanent', () => {
    expect(classifyOutcome(http(400, 'ErrorInvalidRecipients', 'At least one recipient is not valid.'))).toEqual({ action: 'fail', reason: 'HTTP 400 ErrorInvalidRecipients: At least one recipient is not valid.' });
    expect(classifyOutcome(http(400, 'ErrorMimeContentInvalidBase64String'))).toMatchObject({ action: 'fail' });
  });

  it('network errors and unknown statuses are retried, never failed', () => {
    expect(classifyOutcome({ kind: 'network', message: 'socket hang up', code: 'ECONNRESET' })).toMatchObject({ action: 'retry', kind: 'transient', reason: 'network error: ECONNRESET socket hang up' });
    expect(classifyOutcome(http(302))).toMatchObject({ action: 'retry', kind: 'transient' });
  });
});
