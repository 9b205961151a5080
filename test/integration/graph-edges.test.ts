/**
 * The relay at Graph's edges (issue 12, items 1-4 and 6), against the emulator with faults. The
 * emulator counts every request that reaches a mailbox before its Retry-After has passed, on
 * every route (sendMail, drafts, attachments, upload URL, DELETE): each test asserts none, and
 * that no draft is left in the emulator's store.
 */
import { randomBytes } from 'node:crypto';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveredMessage } from '../../src/emulator/graph-mail.js';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { until } from '../helpers/wait.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const smtp = (harness: Harness, connections = 1) => nodemailer.createTransport({ host: '127.0.0.1', port: harness.port, secure: false, ignoreTLS: true, pool: true, maxConnections: connections });

async function sendWithAttachment(harness: Harness, testId: string, bytes: Buffer, filename = `${testId}.pdf`): Promise<void> {
  const transport = smtp(harness);
  await transport.sendMail({ from: MAILBOX, to: 'finance@contoso.example', subject: testId, text: 'scan attached', attachments: [{ filename, content: bytes, contentType: 'application/pdf' }], headers: { 'X-Test-Id': testId } });
  transport.close();
}

/** The attachment as Graph received it: in the MIME (one request) or as a draft attachment. */
async function receivedAttachment(message: DeliveredMessage): Promise<Buffer | undefined> {
  if (message.via === 'draft' && message.attachments.length > 0) return message.attachments[0]?.bytes;
  const parsed = await simpleParser(message.mime as Buffer);
  return parsed.attachments[0]?.content;
}

const requestsTo = (harness: Harness, route: string) => harness.emulator.mail.requests.filter((r) => r.route === route);

describe('no request for a paused mailbox, on any path (items 1 and 2)', () => {
  it('keeps Retry-After when 503s with a shorter one and connection resets interleave (the reported mix)', async () => {
    h = await startHarness();
    h.emulator.mail.latencyMs = 20;
    // 429 x6 with Retry-After 2, 503 x4 with Retry-After 1, 3 connection resets (issue 12, item 2).
    for (let i = 0; i < 6; i++) {
      h.emulator.faults.add({ route: 'sendMail', status: 429, code: 'ApplicationThrottled', retryAfter: '2' }, { route: 'sendMail', status: 503, retryAfter: '1', times: i < 4 ? 1 : 0 }, { route: 'sendMail', reset: true, times: i < 3 ? 1 : 0 });
    }
    const transport = smtp(h, 6);
    await Promise.all(Array.from({ length: 120 }, (_, i) => transport.sendMail({ from: 'rmm@contoso.example', to: 'ops@contoso.example', subject: `mix ${i}`, text: `alert ${i}`, headers: { 'X-Test-Id': `mix-${i}` } })));
    transport.close();
    for (let i = 0; i < 120; i++) await waitForDelivery(h.emulator, `mix-${i}`, 60_000);
    expect(h.emulator.faults.pending).toBe(0);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
    expect(Math.max(...h.emulator.mail.maxInFlightSeen.values())).toBeLessThanOrEqual(4);
  }, 90_000);

  it('resumes an upload after a 429 on a chunk: nothing reaches the mailbox before Retry-After, one draft, none left', async () => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '40MB' } } });
    const scan = randomBytes(12 * 1024 * 1024);
    // The second chunk is throttled; the upload continues from where the session stands.
    h.emulator.faults.add({ route: 'upload', delayMs: 0, times: 1 }, { route: 'upload', status: 429, code: 'ApplicationThrottled', retryAfter: '1', times: 1 });
    await sendWithAttachment(h, 'upload-429', scan);
    const delivered = await waitForDelivery(h.emulator, 'upload-429', 60_000);
    expect((await receivedAttachment(delivered))?.equals(scan)).toBe(true);
    expect(h.emulator.faults.pending).toBe(0);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
    // Resumed, not started over: one draft, one upload session.
    expect(requestsTo(h, 'createMessage')).toHaveLength(1);
    expect(requestsTo(h, 'uploadSession')).toHaveLength(1);
    expect(h.emulator.mail.drafts.size).toBe(0);
    expect(h.logs.records.some((r) => r.event === 'delivery.deferred' && r.status === 429)).toBe(true);
  }, 90_000);

  it('deletes a given-up draft only after the pause that came meanwhile, and leaves none', async () => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '40MB' } } });
    // The upload session is lost (404): the draft is given up and a fresh one is started, whose
    // creation is throttled for 2 s. The clean-up DELETE must wait for that pause.
    h.emulator.faults.add({ route: 'uploadSession', status: 404, code: 'ErrorItemNotFound' }, { route: 'createMessage', delayMs: 0 }, { route: 'createMessage', status: 429, retryAfter: '2' });
    const scan = randomBytes(5 * 1024 * 1024);
    await sendWithAttachment(h, 'lost-session', scan);
    const delivered = await waitForDelivery(h.emulator, 'lost-session', 60_000);
    expect((await receivedAttachment(delivered))?.equals(scan)).toBe(true);
    await until(() => h?.emulator.mail.drafts.size === 0, 15_000);
    const throttled = requestsTo(h, 'createMessage').find((r) => r.status === 429);
    const deletes = requestsTo(h, 'deleteMessage');
    expect(deletes).toHaveLength(1);
    expect(deletes[0]?.at).toBeGreaterThanOrEqual((throttled?.at ?? 0) + 2000);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
    expect(h.logs.records.some((r) => r.event === 'draft.deleted')).toBe(true);
  }, 90_000);

  it('still deletes drafts waiting for clean-up after a restart', async () => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '40MB' } } });
    // A refused upload session fails the message for good: its draft is given up. Deleting it
    // fails (connection resets) until the relay restarts.
    h.emulator.faults.add({ route: 'uploadSession', status: 400, code: 'ErrorInvalidRequest' }, { route: 'deleteMessage', reset: true, times: 1000 });
    await sendWithAttachment(h, 'restart-cleanup', randomBytes(4 * 1024 * 1024));
    await until(() => (h?.relay.drafts.pending ?? []).some((d) => d.state === 'delete') && requestsTo(h as Harness, 'deleteMessage').length > 0, 15_000);
    expect(h.emulator.mail.drafts.size).toBe(1);
    await h.restart();
    h.emulator.faults.clear();
    // The emulator drops the draft as the DELETE arrives; the relay forgets it when the answer is
    // back: both, however they interleave.
    await until(() => h?.emulator.mail.drafts.size === 0 && h.relay.drafts.pending.length === 0, 15_000);
    expect(h.logs.records.some((r) => r.event === 'draft.cleanup_resumed')).toBe(true);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
  }, 60_000);
});

describe('an operator deleting a message mid-upload (item 1)', () => {
  it('deletes its draft too, and leaves none', async () => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '40MB' } } });
    h.emulator.faults.add({ route: 'upload', status: 500, code: 'generalException', times: 10_000 });
    const transport = smtp(h);
    const info = await transport.sendMail({ from: MAILBOX, to: 'finance@contoso.example', subject: 'stuck', text: 'x', attachments: [{ filename: 'stuck.pdf', content: randomBytes(5 * 1024 * 1024) }] });
    transport.close();
    const id = /queued as (\w+)/.exec(info.response)?.[1] ?? '';
    await until(() => h?.logs.records.some((r) => r.event === 'delivery.deferred' && r.queueId === id) === true, 20_000);
    // The draft is kept for the upload to resume...
    expect(h.emulator.mail.drafts.size).toBe(1);
    // ...until the message is deleted.
    await until(() => (h as Harness).relay.queue.delete(id).then(() => true, () => false), 15_000);
    await until(() => h?.emulator.mail.drafts.size === 0, 15_000);
    expect(h.relay.drafts.pending).toEqual([]);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
  }, 60_000);
});

describe('sizes with headroom (item 4)', () => {
  it.each([3_145_500, 3_145_501, 3_145_502, 3_145_611, 3_145_725, 3_145_726, 3_145_727])('delivers a decoded attachment of %i bytes whole', async (size) => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '20MB' } } });
    const bytes = randomBytes(size);
    // A scanner's kind of file name: with the JSON wrapper around it, the old thresholds sent every
    // size in this range as one JSON request of more than 4 MiB.
    await sendWithAttachment(h, `att-${size}`, bytes, `Scan ${size} – Übersicht der Rechnungen Oktober bis Dezember, Abteilung Finanzen und Controlling, Original mit Unterschrift.pdf`);
    const delivered = await waitForDelivery(h.emulator, `att-${size}`, 30_000);
    expect((await receivedAttachment(delivered))?.equals(bytes)).toBe(true);
    expect(h.emulator.mail.requests.filter((r) => r.status === 413 || r.status === 400)).toEqual([]);
  }, 60_000);

  it.each([
    ['3 MiB - 1 KiB', 3 * 1024 * 1024 - 1024],
    ['3 MiB', 3 * 1024 * 1024],
    ['3 MiB + 1 KiB', 3 * 1024 * 1024 + 1024],
  ])('delivers raw MIME of %s whole', async (_label, total) => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '20MB' } } });
    const head = (filler: string) => `From: ${MAILBOX}\r\nTo: finance@contoso.example\r\nSubject: raw size\r\nX-Test-Id: raw-${total}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attachment ${filler}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="raw.bin"\r\n\r\n`;
    const tail = '\r\n--b--\r\n';
    // Base64 in lines of 76 characters; the text part takes the few bytes left, so the message is exactly `total` bytes.
    const room = total - head('').length - tail.length;
    const decoded = randomBytes(Math.floor(room / 78) * 57);
    const body = decoded.toString('base64').replace(/.{76}(?!$)/g, '$&\r\n');
    const raw = Buffer.from(head('x'.repeat(room - body.length)) + body + tail);
    expect(raw.length).toBe(total);
    const transport = smtp(h);
    await transport.sendMail({ envelope: { from: MAILBOX, to: ['finance@contoso.example'] }, raw });
    transport.close();
    const delivered = await waitForDelivery(h.emulator, `raw-${total}`, 30_000);
    expect((await receivedAttachment(delivered))?.equals(decoded)).toBe(true);
    expect(h.emulator.mail.requests.filter((r) => r.status >= 400)).toEqual([]);
  }, 60_000);
});

describe('classification at the edges (item 6)', () => {
  it('retries 409 and 423 instead of failing the message', async () => {
    h = await startHarness();
    h.emulator.faults.add({ route: 'sendMail', status: 409, code: 'ErrorIrresolvableConflict' }, { route: 'sendMail', status: 423, code: 'ErrorItemLocked' });
    const transport = smtp(h);
    await transport.sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'conflict', text: 'x', headers: { 'X-Test-Id': 'conflict' } });
    transport.close();
    await waitForDelivery(h.emulator, 'conflict', 15_000);
    expect(await h.relay.spool.list('failed')).toEqual([]);
  });

  it('starts a fresh draft when the upload session is gone (404), without an operator message', async () => {
    h = await startHarness({ config: { smtp: { maxMessageSize: '40MB' } } });
    h.emulator.faults.add({ route: 'upload', delayMs: 0 }, { route: 'upload', status: 404, code: 'ErrorItemNotFound', times: 1 });
    const scan = randomBytes(8 * 1024 * 1024);
    await sendWithAttachment(h, 'expired-session', scan);
    const delivered = await waitForDelivery(h.emulator, 'expired-session', 60_000);
    expect((await receivedAttachment(delivered))?.equals(scan)).toBe(true);
    expect(requestsTo(h, 'createMessage')).toHaveLength(2);
    expect(h.logs.records.filter((r) => r.operatorActionRequired)).toEqual([]);
    await until(() => h?.emulator.mail.drafts.size === 0, 15_000);
    expect(h.emulator.mail.retryAfterViolations).toEqual([]);
  }, 60_000);
});
