/**
 * Issue 11 item 11: a refused reload changes nothing. The new state (Graph clients, every route's
 * clients, the TLS files) is built first and applied only when all of it succeeded.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { CLIENT_ID, MAILBOX, TENANT, relayConfigInput, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function sendOne(harness: Harness, testId: string): Promise<void> {
  const client = await RawSmtpClient.connect(harness.port);
  await client.reply();
  await client.command('EHLO reload');
  expect((await client.send('rmm@contoso.example', ['ops@contoso.example'], `Subject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nbody\r\n`)).code).toBe(250);
  await client.quit();
}

describe('a refused reload changes nothing', () => {
  it('a route whose certificate file is missing refuses the reload, and the new client secret is never used', async () => {
    h = await startHarness();
    await sendOne(h, 'before-reload');
    await waitForDelivery(h.emulator, 'before-reload');
    const tokensBefore = h.relay.tokens;

    const next = validateConfig(
      relayConfigInput(h.emulator, h.spoolDir, {
        // A secret the tenant does not know: were it put in use, every delivery would fail.
        graph: { auth: { method: 'clientSecret', clientSecret: 'rotated-but-wrong-secret' } },
        routes: [{ senders: ['*@branch1.example'], mailbox: MAILBOX, graph: { tenantId: TENANT, clientId: CLIENT_ID, auth: { method: 'certificate', certificateFile: `${h.spoolDir}/missing/app.crt`, privateKeyFile: `${h.spoolDir}/missing/app.key` } } }],
      }),
      {},
      'reload',
    );
    await expect(h.relay.reload(next)).rejects.toThrow(/ENOENT.*app\.(crt|key)/);
    expect(h.relay.tokens).toBe(tokensBefore);
    expect(h.logs.records.some((r) => r.event === 'config.reload_refused')).toBe(true);
    expect(h.logs.records.some((r) => r.event === 'config.reloaded')).toBe(false);

    // The previous credentials still deliver (the emulator refuses the wrong secret).
    await sendOne(h, 'after-refused-reload');
    await waitForDelivery(h.emulator, 'after-refused-reload', 10_000);
  });

  it('unreadable TLS files refuse the reload before the log level or SMTP limits change', async () => {
    h = await startHarness();
    const levelBefore = h.logs.logger.level;
    const next = validateConfig(
      relayConfigInput(h.emulator, h.spoolDir, { smtp: { maxRecipients: 1, tls: { certFile: `${h.spoolDir}/none.crt`, keyFile: `${h.spoolDir}/none.key` } } }),
      {},
      'reload',
    );
    await expect(h.relay.reload({ ...next, log: { level: 'trace' } })).rejects.toThrow(/ENOENT/);
    expect(h.logs.logger.level).toBe(levelBefore);
    // maxRecipients 1 was not applied: two recipients are still accepted.
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO reload');
    expect((await client.command('MAIL FROM:<rmm@contoso.example>')).code).toBe(250);
    expect((await client.command('RCPT TO:<a@contoso.example>')).code).toBe(250);
    expect((await client.command('RCPT TO:<b@contoso.example>')).code).toBe(250);
    await client.quit();
  });
});
