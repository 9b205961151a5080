import { randomBytes } from 'node:crypto';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

function transport() {
  return nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
}

function deliveredWith(testId: string) {
  return waitForDelivery(h.emulator, testId);
}

describe('relay end to end (nodemailer in, Graph emulator out)', () => {
  it('delivers multipart/alternative with subject, text and HTML intact', async () => {
    const info = await transport().sendMail({
      from: 'monitor@contoso.example',
      to: 'ops@contoso.example',
      subject: 'Disk almost full on srv-01',
      text: 'Disk C: is 97% full.',
      html: '<p>Disk <b>C:</b> is 97% full.</p>',
      headers: { 'X-Test-Id': 'alt-1' },
    });
    expect(info.response).toMatch(/^250 2\.6\.0 Ok: queued as [0-9A-Z]{19}$/);
    const message = await deliveredWith('alt-1');
    const parsed = await simpleParser(message.mime as Buffer);
    expect(parsed.subject).toBe('Disk almost full on srv-01');
    expect(parsed.text?.trim()).toBe('Disk C: is 97% full.');
    expect(parsed.html).toContain('<b>C:</b>');
    expect(message.recipients).toEqual(['ops@contoso.example']);
    expect(message.mailbox).toBe(MAILBOX);
  });

  it('keeps attachments and inline images byte-for-byte, with their content-ids', async () => {
    const pdf = randomBytes(200_000);
    const png = randomBytes(30_000);
    await transport().sendMail({
      from: 'scanner@contoso.example',
      to: 'finance@contoso.example',
      subject: 'Scan',
      html: '<img src="cid:logo@scan">',
      attachments: [
        { filename: 'scan.pdf', content: pdf, contentType: 'application/pdf' },
        { filename: 'logo.png', content: png, contentType: 'image/png', cid: 'logo@scan' },
      ],
      headers: { 'X-Test-Id': 'att-1' },
    });
    const parsed = await simpleParser((await deliveredWith('att-1')).mime as Buffer);
    const byName = new Map(parsed.attachments.map((a) => [a.filename, a]));
    expect(byName.get('scan.pdf')?.content.equals(pdf)).toBe(true);
    expect(byName.get('logo.png')?.content.equals(png)).toBe(true);
    expect(byName.get('logo.png')?.contentId).toBe('<logo@scan>');
    expect(byName.get('logo.png')?.related).toBe(true);
  });

  it('carries UTF-8 headers and bodies (SMTPUTF8 and encoded words)', async () => {
    await transport().sendMail({
      from: '"Überwachung" <monitor@contoso.example>',
      to: 'opérations@contoso.example',
      subject: 'Störung: Drucker 3 – 打印机 🖨️',
      text: 'Grüße aus Köln – 你好 – ✅',
      headers: { 'X-Test-Id': 'utf8-1' },
    });
    const message = await deliveredWith('utf8-1');
    const parsed = await simpleParser(message.mime as Buffer);
    expect(parsed.subject).toBe('Störung: Drucker 3 – 打印机 🖨️');
    expect(parsed.text?.trim()).toBe('Grüße aus Köln – 你好 – ✅');
    expect(message.recipients).toEqual(['opérations@contoso.example']);
  });

  it('sends to exactly the envelope: envelope-only recipients become one top-level Bcc', async () => {
    await transport().sendMail({
      envelope: { from: 'backup@contoso.example', to: ['visible@contoso.example', 'hidden1@contoso.example', 'hidden2@contoso.example'] },
      from: 'backup@contoso.example',
      to: 'visible@contoso.example',
      subject: 'Backup report',
      text: 'ok',
      attachments: [{ filename: 'log.txt', content: 'Bcc: not-a-header@contoso.example\n' }],
      headers: { 'X-Test-Id': 'bcc-1' },
    });
    const message = await deliveredWith('bcc-1');
    expect(message.recipients.sort()).toEqual(['hidden1@contoso.example', 'hidden2@contoso.example', 'visible@contoso.example']);
    const mime = (message.mime as Buffer).toString('utf8');
    const headerBlock = mime.slice(0, mime.indexOf('\r\n\r\n'));
    expect(headerBlock.match(/^Bcc:/gim)).toHaveLength(1);
    expect(headerBlock).toMatch(/^Bcc: hidden1@contoso\.example,\r\n hidden2@contoso\.example$/m);
    // Nothing was added inside MIME parts.
    expect(mime.slice(mime.indexOf('\r\n\r\n')).match(/^Bcc: hidden/gim)).toBeNull();
  });

  it('replaces a sender-supplied Bcc that names non-recipients, so Graph cannot send to them', async () => {
    const client = await RawSmtpClient.connect(h.port);
    expect((await client.reply()).code).toBe(220);
    await client.command('EHLO printer.local');
    const reply = await client.send('printer@contoso.example', ['to@contoso.example', 'b1@contoso.example'], 'From: printer@contoso.example\r\nTo: to@contoso.example\r\nBcc: b1@contoso.example, notinenvelope@contoso.example\r\nSubject: x\r\nX-Test-Id: bcc-2\r\n\r\nbody\r\n');
    expect(reply.code).toBe(250);
    await client.quit();
    const message = await deliveredWith('bcc-2');
    expect(message.recipients.sort()).toEqual(['b1@contoso.example', 'to@contoso.example']);
  });

  it('accepts the null sender (bounces) and delivers it', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO mta.local');
    const reply = await client.send('', ['postmaster@contoso.example'], 'From: MAILER-DAEMON@mta.local\r\nTo: postmaster@contoso.example\r\nSubject: Undelivered\r\nX-Test-Id: null-1\r\n\r\nbounce\r\n');
    expect(reply.code).toBe(250);
    await client.quit();
    const message = await deliveredWith('null-1');
    expect(message.recipients).toEqual(['postmaster@contoso.example']);
  });

  it('delivers to many recipients (150) with all of them in the envelope', async () => {
    const to = Array.from({ length: 150 }, (_, i) => `user${i}@contoso.example`);
    await transport().sendMail({ envelope: { from: 'rmm@contoso.example', to }, from: 'rmm@contoso.example', to: to.slice(0, 3), subject: 'Outage', text: 'x', headers: { 'X-Test-Id': 'many-1' } });
    const message = await deliveredWith('many-1');
    expect(message.recipients.sort()).toEqual([...to].sort());
    const header = (message.mime as Buffer).toString('utf8').split('\r\n\r\n')[0] as string;
    for (const line of header.split('\r\n')) expect(line.length).toBeLessThanOrEqual(998);
  });

  it('adds Date and Message-ID when the sender omits them, and a Received trace field on top', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO ups.local');
    const reply = await client.send('ups@contoso.example', ['ops@contoso.example'], 'Subject: on battery\r\nX-Test-Id: bare-1\r\n\r\nOn battery power\r\n');
    await client.quit();
    const queueId = /queued as ([0-9A-Z]{19})/.exec(reply.text)?.[1];
    const mime = ((await deliveredWith('bare-1')).mime as Buffer).toString('utf8');
    // No To field shows ops@ (it travels as Bcc), so the trace field does not name it.
    expect(mime).toMatch(/^Received: from ups\.local \(\[127\.0\.0\.1\]\)\r\n\tby relay\.test \(smtp-graph-relay\) with ESMTP id [0-9A-Z]{19};\r\n\t\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/);
    expect(mime).toMatch(/\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/);
    expect(mime).toContain(`\r\nMessage-ID: <${queueId}@relay.test>\r\n`);
  });

  it('normalises bare LF line endings to CRLF', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO copier');
    client.write('MAIL FROM:<copier@contoso.example>\r\nRCPT TO:<ops@contoso.example>\r\nDATA\r\n');
    expect((await client.reply()).code).toBe(250);
    expect((await client.reply()).code).toBe(250);
    expect((await client.reply()).code).toBe(354);
    // Bare LF inside the message; the terminator itself must be CRLF.CRLF (smtp-server refuses bare-LF dots: SMTP smuggling).
    client.write('From: copier@contoso.example\nTo: ops@contoso.example\nSubject: lf\nX-Test-Id: lf-1\n\nline one\nline two\r\n.\r\n');
    expect((await client.reply()).code).toBe(250);
    await client.quit();
    const mime = (await deliveredWith('lf-1')).mime as Buffer;
    expect(mime.toString('latin1')).toContain('Subject: lf\r\nX-Test-Id: lf-1\r\n');
    expect(mime.toString('latin1')).toContain('\r\n\r\nline one\r\nline two\r\n');
    expect(/[^\r]\n/.test(mime.toString('latin1'))).toBe(false);
  });

  it('keeps several messages of one connection apart (never named by session)', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO burst');
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const reply = await client.send('rmm@contoso.example', ['ops@contoso.example'], `Subject: alert ${i}\r\nX-Test-Id: session-${i}\r\n\r\nalert ${i}\r\n`);
      expect(reply.code).toBe(250);
      ids.push(/queued as (\S+)/.exec(reply.text)?.[1] ?? '');
    }
    await client.quit();
    expect(new Set(ids).size).toBe(20);
    for (let i = 0; i < 20; i++) {
      const message = await deliveredWith(`session-${i}`);
      expect((message.mime as Buffer).toString()).toContain(`alert ${i}\r\n`);
    }
  });

  it('logs one event per lifecycle step, keyed by queue id, with no secret in any log line', async () => {
    const reply = await transport().sendMail({ from: 'a@contoso.example', to: 'b@contoso.example', subject: 'log', text: 'x', headers: { 'X-Test-Id': 'log-1' } });
    const queueId = /queued as (\S+)/.exec(reply.response)?.[1];
    await deliveredWith('log-1');
    // The delivered event is written after the emulator answered: wait for it (no fixed sleep; 50 ms was too short under load).
    const eventsOf = () => h.logs.records.filter((r) => r.queueId === queueId).map((r) => r.event);
    await until(() => eventsOf().includes('delivery.delivered'), 5000);
    const events = eventsOf();
    expect(events).toEqual(['smtp.accepted', 'delivery.delivered']);
    expect(h.logs.text()).not.toContain('test-secret-value');
    expect(h.logs.text()).not.toMatch(/eyJ[\w-]+\.eyJ/); // no access token
  });
});
