/**
 * What Graph receives from the devices people actually point at the relay (fixtures in
 * test/fixtures/quirks, byte for byte). The relay fixes only what must be fixed (line endings,
 * missing Date/Message-ID, recipients outside the envelope) and passes everything else through.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

const fixture = (name: string) => readFileSync(path.resolve(__dirname, '../fixtures/quirks', name));
const bodyOf = (mime: Buffer) => mime.subarray(mime.indexOf('\r\n\r\n') + 4);
const headerOf = (mime: Buffer) => mime.subarray(0, mime.indexOf('\r\n\r\n') + 2).toString('latin1');

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

async function relay(name: string, rcpt: string[] = ['ops@contoso.example'], from = 'device@contoso.example', harness: Harness = h) {
  const testId = `quirk-${name}`;
  const client = await RawSmtpClient.connect(harness.port);
  await client.reply();
  await client.command('EHLO device');
  const data = Buffer.concat([Buffer.from(`X-Test-Id: ${testId}\r\n`), fixture(name)]);
  const reply = await client.send(from, rcpt, data);
  await client.quit();
  expect(reply.code).toBe(250);
  return waitForDelivery(harness.emulator, testId);
}

describe('device quirks', () => {
  it('bare-lf.eml: LF line endings arrive as CRLF', async () => {
    const mime = (await relay('bare-lf.eml')).mime as Buffer;
    expect(/[^\r]\n/.test(mime.toString('latin1'))).toBe(false);
    // (The test client ends the DATA with CRLF.CRLF after the fixture's final bare LF, hence one blank line more.)
    expect(bodyOf(mime).toString()).toMatch(/^Page 1 of 1\r\nDone\.\r\n/);
  });

  it('eight-bit-no-charset.eml: 8-bit bytes pass unchanged, no charset is invented', async () => {
    const mime = (await relay('eight-bit-no-charset.eml')).mime as Buffer;
    expect(bodyOf(mime).equals(bodyOf(fixture('eight-bit-no-charset.eml')))).toBe(true);
    expect(headerOf(mime)).toContain('Content-Type: text/plain\r\n');
    expect(headerOf(mime)).toContain('Subject: Batterie schw\xe4che\r\n');
  });

  it('windows-1252.eml: the declared charset and its bytes (0x80-0x9F) pass unchanged', async () => {
    const mime = (await relay('windows-1252.eml')).mime as Buffer;
    expect(bodyOf(mime).equals(bodyOf(fixture('windows-1252.eml')))).toBe(true);
    expect(bodyOf(mime).includes(Buffer.from([0x80, 0x20, 0x93]))).toBe(true);
  });

  it('long-lines.eml: long body and header lines are not wrapped or cut', async () => {
    const mime = (await relay('long-lines.eml')).mime as Buffer;
    expect(mime.toString('latin1')).toContain(`\r\n${'0123456789'.repeat(500)}\r\nend\r\n`);
    expect(headerOf(mime)).toContain(`X-Long-Header: ${'h'.repeat(1500)}\r\n`);
  });

  it('missing-headers.eml: Date and Message-ID are added, nothing else is invented', async () => {
    const header = headerOf((await relay('missing-headers.eml')).mime as Buffer);
    expect(header).toMatch(/\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/);
    expect(header).toMatch(/\r\nMessage-ID: <[0-9A-Z]{19}@relay\.test>\r\n/);
    expect(header).not.toMatch(/^From:/m);
    // The only recipient comes from the envelope, as a Bcc.
    expect(header).toContain('Bcc: ops@contoso.example\r\n');
  });

  it('duplicate-headers.eml: duplicates are passed as they are; no second Date or Message-ID is added', async () => {
    const header = headerOf((await relay('duplicate-headers.eml')).mime as Buffer);
    expect(header.match(/^Subject:/gm)).toHaveLength(2);
    expect(header.match(/^Date:/gm)).toHaveLength(2);
    expect(header.match(/^Message-ID:/gim)).toHaveLength(2);
  });

  it('smtputf8.eml: UTF-8 addresses in the envelope (SMTPUTF8) and the headers', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO device');
    expect((await client.command('MAIL FROM:<jörg@bücher.example> SMTPUTF8')).code).toBe(250);
    expect((await client.command('RCPT TO:<opérations@contoso.example>')).code).toBe(250);
    expect((await client.command('DATA')).code).toBe(354);
    client.write(Buffer.concat([Buffer.from('X-Test-Id: quirk-utf8\r\n'), fixture('smtputf8.eml'), Buffer.from('.\r\n')]));
    expect((await client.reply()).code).toBe(250);
    await client.quit();
    const message = await waitForDelivery(h.emulator, 'quirk-utf8');
    expect(message.recipients).toEqual(['opérations@contoso.example']);
    expect((message.mime as Buffer).toString('utf8')).toContain('From: Jörg <jörg@bücher.example>\r\n');
  });

  it('header-only-recipients.eml: by default only envelope recipients receive it; originals kept as X-Original-To/Cc', async () => {
    const message = await relay('header-only-recipients.eml', ['ops@contoso.example']);
    expect(message.recipients).toEqual(['ops@contoso.example']);
    const header = headerOf(message.mime as Buffer);
    expect(header).toContain('To: Ops <ops@contoso.example>\r\n');
    expect(header).toContain('X-Original-To: "Ops" <ops@contoso.example>, manager@contoso.example\r\n');
    expect(header).toContain('X-Original-Cc: audit@contoso.example\r\n');
    expect(header).not.toMatch(/^Cc:/m);
  });

  it('header-only-recipients.eml with headerOnlyRecipients: deliver: Graph also sends to the header addresses', async () => {
    const deliver = await startHarness({ config: { delivery: { headerOnlyRecipients: 'deliver', perMailbox: { messagesPerMinute: 0 } } } });
    try {
      const message = await relay('header-only-recipients.eml', ['ops@contoso.example'], 'device@contoso.example', deliver);
      expect(message.recipients.sort()).toEqual(['audit@contoso.example', 'manager@contoso.example', 'ops@contoso.example']);
    } finally {
      await deliver.close();
    }
  });
});
