/**
 * Real-world MIME fixtures from ../shared/corpus (not part of the repository) relayed by MIME
 * passthrough: the body after the header block must arrive byte-for-byte (after CRLF
 * normalisation), and only top-level fields may be added.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { itWhen } from '../helpers/prerequisites.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

// Beside the repository (../shared/corpus); .ci/run names it in RELAY_CORPUS_DIR for a clone made elsewhere.
const CORPUS = process.env.RELAY_CORPUS_DIR ?? path.resolve(__dirname, '../../../shared/corpus');
const available = existsSync(CORPUS);
const fixtures = available ? readdirSync(CORPUS).filter((f) => f.endsWith('.eml')).sort() : [];

const toCrlf = (data: Buffer) => Buffer.from(data.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');

function split(message: Buffer): { header: string; body: Buffer } {
  const end = message.indexOf('\r\n\r\n');
  return end === -1 ? { header: message.toString('latin1'), body: Buffer.alloc(0) } : { header: message.subarray(0, end + 2).toString('latin1'), body: message.subarray(end + 4) };
}

let h: Harness;
beforeAll(async () => {
  // Fidelity: headers pass as they are, so To/Cc listing non-envelope addresses are delivered, not limited.
  if (available) h = await startHarness({ config: { smtp: { maxMessageSize: '3MB' }, delivery: { headerOnlyRecipients: 'deliver', perMailbox: { messagesPerMinute: 0 } } } });
});
afterAll(async () => {
  if (available) await h.close();
});

// Without the corpus this file still registers one test: skipped (and counted) locally, failed with
// CI=true, never zero tests that a summary line would not show.
itWhen(available, `the MIME corpus ${CORPUS} is not present (it is checked out beside the repository as ../shared/corpus)`)('the MIME corpus is present', () => {
  expect(fixtures.length).toBeGreaterThan(0);
});

describe.runIf(available)(`MIME corpus fidelity (${CORPUS})`, () => {
  it.each(fixtures)('relays %s with its body byte-for-byte and its header fields in order', async (name) => {
    const original = toCrlf(readFileSync(path.join(CORPUS, name)));
    const testId = `corpus-${name}`;
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO corpus');
    const reply = await client.send('sender@contoso.example', ['rcpt@contoso.example'], Buffer.concat([Buffer.from(`X-Test-Id: ${testId}\r\n`), original]));
    await client.quit();
    expect(reply.code).toBe(250);
    const delivered = (await waitForDelivery(h.emulator, testId)).mime as Buffer;
    const sent = split(original);
    const got = split(delivered);
    expect(got.body.equals(sent.body)).toBe(true);
    // Every original header line is still there, in order, byte-for-byte; ours are only added.
    const originalLines = sent.header.split('\r\n').filter(Boolean);
    const gotLines = got.header.split('\r\n');
    let cursor = 0;
    for (const line of originalLines) {
      if (/^bcc:/i.test(line)) continue; // the one field we may replace
      cursor = gotLines.indexOf(line, cursor);
      expect(cursor, `header line kept: ${line.slice(0, 80)}`).toBeGreaterThanOrEqual(0);
    }
  });
});
