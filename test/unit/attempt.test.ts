import { describe, expect, it } from 'vitest';
import { attemptDelivery, MAX_SINGLE_REQUEST_MIME_BYTES } from '../../src/delivery/attempt.js';
import { heldOutcome, type GraphOutcome } from '../../src/graph/graph-call.js';
import type { GraphMailer } from '../../src/graph/mailer.js';
import { TokenError, type TokenProvider } from '../../src/graph/token-provider.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import type { Spool } from '../../src/spool/spool.js';

const entry: SpoolEntry = {
  version: 1,
  id: '0MWXQ0000000000ABCD',
  receivedAt: 0,
  envelope: { mailFrom: 'a@x', rcptTo: ['b@x'] },
  client: { address: '127.0.0.1', helo: 'h' },
  size: 100,
  mailbox: 'relay@x',
  attempts: 0,
  nextAttemptAt: 0,
  held: false,
};

function fakes(outcomes: GraphOutcome[], tokenError?: TokenError) {
  const tokenCalls: Array<{ forceRefresh?: boolean } | undefined> = [];
  const sent: string[] = [];
  const tokens: TokenProvider = {
    description: 'fake',
    async getToken(options) {
      tokenCalls.push(options);
      if (tokenError) throw tokenError;
      return `token-${tokenCalls.length}`;
    },
  };
  const mailer: GraphMailer = {
    async sendMime(_mailbox, _mime, token) {
      sent.push(token);
      return outcomes.shift() ?? { kind: 'http', status: 202, retryAfterMs: null };
    },
    async deleteDraft() {
      return { kind: 'http', status: 204, retryAfterMs: null };
    },
    async sendLarge(_mailbox, file, size, token) {
      sent.push(`large:${token}:${file}:${size}`);
      return outcomes.shift() ?? { kind: 'http', status: 202, retryAfterMs: null };
    },
  };
  const spool = { readMessage: async () => Buffer.from('Subject: x\r\n\r\nbody\r\n'), withMessageFile: (id: string, _where: string, use: (file: string) => Promise<unknown>) => use(`/spool/queue/${id}.eml`) } as unknown as Spool;
  return { tokens, mailer, spool, tokenCalls, sent };
}

const http = (status: number, code?: string): GraphOutcome => ({ kind: 'http', status, retryAfterMs: null, ...(code ? { code } : {}), requestId: 'req-1' });

describe('one delivery attempt', () => {
  it('delivers and reports the request-id', async () => {
    const f = fakes([http(202)]);
    expect(await attemptDelivery(entry, f)).toEqual({ decision: { action: 'delivered' }, status: 202, requestId: 'req-1' });
  });

  it('refreshes the token exactly once after a 401, then sends again', async () => {
    const f = fakes([http(401, 'InvalidAuthenticationToken'), http(202)]);
    const result = await attemptDelivery(entry, f);
    expect(result.decision).toEqual({ action: 'delivered' });
    expect(f.tokenCalls).toEqual([undefined, { forceRefresh: true }]);
    expect(f.sent).toEqual(['token-1', 'token-2']);
  });

  it('waits for an administrator after a second 401', async () => {
    const f = fakes([http(401), http(401)]);
    const result = await attemptDelivery(entry, f);
    expect(result.decision).toMatchObject({ action: 'retry', kind: 'operator', reason: expect.stringContaining('401 even with a freshly issued token') });
    expect(f.sent).toHaveLength(2);
  });

  it('defers when no token can be had, naming the AADSTS code', async () => {
    const f = fakes([], new TokenError('Invalid client secret provided.', 'invalid_client', false, '7000215'));
    const result = await attemptDelivery(entry, f);
    expect(result).toMatchObject({ decision: { action: 'retry', kind: 'operator', reason: expect.stringContaining('AADSTS7000215') }, code: 'AADSTS7000215' });
    expect(f.sent).toEqual([]);
  });

  it('sends a message too large for one Graph request through the large-message path, from the spool file', async () => {
    const f = fakes([]);
    const result = await attemptDelivery({ ...entry, size: MAX_SINGLE_REQUEST_MIME_BYTES + 1 }, f);
    expect(result.decision).toEqual({ action: 'delivered' });
    expect(f.sent).toEqual([`large:token-1:/spool/queue/${entry.id}.eml:${MAX_SINGLE_REQUEST_MIME_BYTES + 1}`]);
  });

  it('sends nothing while the mailbox is paused by a Retry-After, and says until when', async () => {
    const f = fakes([]);
    const result = await attemptDelivery(entry, { ...f, now: () => 1000, pausedUntil: () => 5000 });
    expect(result.decision).toEqual({ action: 'postpone', untilMs: 5000 });
    expect(f.sent).toEqual([]);
  });

  it('postpones, without counting an attempt, a request held back as it left or a large message waiting for upload budget', async () => {
    const paused = fakes([heldOutcome()]);
    let pausedUntil = 0;
    const heldAtStart = await attemptDelivery(entry, { ...paused, now: () => 1000, pausedUntil: () => pausedUntil, mailer: { ...paused.mailer, sendMime: async (...args) => ((pausedUntil = 4000), paused.mailer.sendMime(...args)) } });
    expect(heldAtStart.decision).toEqual({ action: 'postpone', untilMs: 4000 });
    const paced = fakes([heldOutcome(60_000)]);
    const waiting = await attemptDelivery({ ...entry, size: MAX_SINGLE_REQUEST_MIME_BYTES + 1 }, { ...paced, now: () => 1000 });
    expect(waiting.decision).toEqual({ action: 'postpone', untilMs: 61_000 });
  });

  it('tells its caller as the request leaves (the gate let it through), and not for one held back there', async () => {
    let pausedUntil = 0;
    let leaving = 0;
    const f = fakes([]);
    // The mailer asks mayStart as the request's first byte is about to be written (http-transport.ts).
    const gated: GraphMailer = { ...f.mailer, sendMime: async (mailbox, mime, token, mayStart) => (mayStart?.() === false ? heldOutcome() : f.mailer.sendMime(mailbox, mime, token)) };
    const deps = { ...f, mailer: gated, now: () => 1000, pausedUntil: () => pausedUntil, leaving: () => (leaving += 1) };
    expect((await attemptDelivery(entry, deps)).decision).toEqual({ action: 'delivered' });
    expect(leaving).toBe(1);
    // A Retry-After arrives while the request waits for its connection: held back, nothing left.
    const held = await attemptDelivery(entry, { ...deps, mailer: { ...gated, sendMime: async (...args) => ((pausedUntil = 4000), gated.sendMime(...args)) } });
    expect(held.decision).toEqual({ action: 'postpone', untilMs: 4000 });
    expect(leaving).toBe(1);
  });

  it('gives the draft up when a large message fails for good', async () => {
    const f = fakes([http(400, 'ErrorInvalidRecipients')]);
    const discarded: string[] = [];
    const tracker = { current: () => null, created: async () => undefined, progress: () => undefined, discard: async () => void discarded.push(entry.id), sent: async () => undefined };
    const result = await attemptDelivery({ ...entry, size: MAX_SINGLE_REQUEST_MIME_BYTES + 1 }, { ...f, drafts: () => tracker });
    expect(result.decision).toMatchObject({ action: 'fail' });
    expect(discarded).toEqual([entry.id]);
  });
});
