/** Mail that finally fails comes back to its sender as an RFC 3464 report, never for the null sender. */
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it } from 'vitest';
import { startHarness, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function sendRaw(harness: Harness, from: string, body: string): Promise<void> {
  const client = await RawSmtpClient.connect(harness.port);
  await client.reply();
  await client.command('EHLO dev');
  expect((await client.send(from, ['nobody@contoso.example'], body)).code).toBe(250);
  await client.quit();
}


describe('bounces (DSN)', () => {
  it('sends a multipart/report to the envelope sender for a permanent failure', async () => {
    h = await startHarness();
    h.emulator.faults.add({ route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
    await sendRaw(h, 'backup@contoso.example', 'From: backup@contoso.example\r\nTo: nobody@contoso.example\r\nSubject: nightly report\r\n\r\nbody\r\n');
    await until(() => h!.emulator.mail.delivered.length === 1);
    const dsn = h.emulator.mail.delivered[0]!;
    expect(dsn.recipients).toEqual(['backup@contoso.example']);
    const parsed = await simpleParser(dsn.mime as Buffer);
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender');
    const text = (dsn.mime as Buffer).toString('latin1');
    expect(text).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
    expect(text).toContain('Final-Recipient: rfc822; nobody@contoso.example\r\nAction: failed\r\nStatus: 5.0.0');
    expect(text).toContain('Diagnostic-Code: smtp; HTTP 400 ErrorInvalidRecipients');
    expect(text).toContain('Content-Type: text/rfc822-headers\r\n\r\nReceived: from dev');
    expect(text).toContain('Subject: nightly report');
    expect(h.logs.records.some((r) => r.event === 'bounce.queued')).toBe(true);
  });

  it('reports an expired message with status 4.4.7, to bounces.to when set', async () => {
    h = await startHarness({ config: { delivery: { maxQueueLifetime: '300ms', retry: { minDelay: '100ms', maxDelay: '100ms' }, perMailbox: { messagesPerMinute: 0 } }, ...{} } });
    await h.relay.reload({ ...h.config, bounces: { enabled: true, to: 'it@contoso.example' } });
    h.emulator.faults.add({ route: 'sendMail', status: 503, times: 1000 });
    await sendRaw(h, 'ups@contoso.example', 'Subject: on battery\r\n\r\nx\r\n');
    await until(() => h!.logs.records.some((r) => r.event === 'bounce.queued'));
    h.emulator.faults.clear(); // Graph recovers: the report itself gets through
    await until(() => h!.emulator.mail.delivered.length === 1, 15_000);
    const dsn = h.emulator.mail.delivered[0]!;
    expect(dsn.recipients).toEqual(['it@contoso.example']);
    expect((dsn.mime as Buffer).toString()).toContain('Action: failed\r\nStatus: 4.4.7');
  });

  it('never bounces the null sender', async () => {
    h = await startHarness();
    h.emulator.faults.add({ route: 'sendMail', status: 400 });
    await sendRaw(h, '', 'Subject: a bounce itself\r\n\r\nx\r\n');
    await until(() => h!.logs.records.some((r) => r.event === 'delivery.failed'));
    await new Promise((r) => setTimeout(r, 300));
    expect(h.logs.records.some((r) => r.event === 'bounce.queued')).toBe(false);
    expect(h.emulator.mail.delivered).toHaveLength(0);
  });
});
