/**
 * Who sends: routes by sender (envelope and header From), client address and AUTH user; each
 * fromPolicy; the default mailbox; and refusal when nobody may send.
 */
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/smtp/local-auth.js';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({
    emulator: {
      mailboxes: [
        { upn: MAILBOX, displayName: 'Relay' },
        { upn: 'scans@contoso.example', displayName: 'Scans' },
        { upn: 'branch1@contoso.example', displayName: 'Branch 1' },
        { upn: 'strict@contoso.example', displayName: 'Strict' },
        { upn: 'pool1@contoso.example', displayName: 'Pool 1' },
        { upn: 'pool2@contoso.example', displayName: 'Pool 2' },
      ],
    },
    config: {
      smtp: { auth: { users: [{ username: 'branch1', passwordHash: await hashPassword('b1-pass') }] } },
      routes: [
        { senders: ['*@scans.contoso.example', 'copier@contoso.example'], mailbox: 'scans@contoso.example', fromPolicy: 'rewrite' },
        { authUsers: ['branch1'], mailbox: 'branch1@contoso.example', fromPolicy: 'keep' },
        { senders: ['*@strict.contoso.example', 'strict@contoso.example'], mailbox: 'strict@contoso.example', fromPolicy: 'reject' },
        { senders: ['*@pool.contoso.example'], clients: ['127.0.0.1/32'], mailboxes: ['pool1@contoso.example', 'pool2@contoso.example'], fromPolicy: 'rewrite' },
      ],
    },
  });
  // Exchange refuses a From the mailbox may not send as, including address-like display names.
  h.emulator.mail.enforceSendAs = true;
});
afterAll(async () => {
  await h.close();
});

const send = (message: Record<string, unknown>, auth?: { user: string; pass: string }) =>
  nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true, ...(auth ? { auth } : {}) }).sendMail({ to: 'ops@contoso.example', text: 'x', ...message });

describe('routing', () => {
  it('routes by envelope sender and rewrites From (display name kept, "@" neutralised, original in Reply-To)', async () => {
    await send({ from: '"copier@contoso.example" <copier@contoso.example>', subject: 'scan', headers: { 'X-Test-Id': 'route-rewrite' } });
    const message = await waitForDelivery(h.emulator, 'route-rewrite');
    expect(message.mailbox).toBe('scans@contoso.example');
    const parsed = await simpleParser(message.mime as Buffer);
    expect(parsed.from?.value).toEqual([{ address: 'scans@contoso.example', name: 'copier at contoso.example' }]);
    expect(parsed.replyTo?.value[0]?.address).toBe('copier@contoso.example');
  });

  it('routes by the header From too, when the envelope sender differs (a device with a fixed envelope)', async () => {
    await send({ envelope: { from: 'bounce@devices.example', to: ['ops@contoso.example'] }, from: 'Scanner 3 <scanner3@scans.contoso.example>', subject: 'scan', headers: { 'X-Test-Id': 'route-header' } });
    const message = await waitForDelivery(h.emulator, 'route-header');
    expect(message.mailbox).toBe('scans@contoso.example');
    expect((await simpleParser(message.mime as Buffer)).from?.value[0]).toEqual({ address: 'scans@contoso.example', name: 'Scanner 3' });
  });

  it('routes by AUTH user and keeps the From as it is', async () => {
    await send({ from: 'branch1@contoso.example', subject: 'b1', headers: { 'X-Test-Id': 'route-auth' } }, { user: 'branch1', pass: 'b1-pass' });
    const message = await waitForDelivery(h.emulator, 'route-auth');
    expect(message.mailbox).toBe('branch1@contoso.example');
    expect((await simpleParser(message.mime as Buffer)).from?.value[0]?.address).toBe('branch1@contoso.example');
  });

  it('fromPolicy reject: 550 5.7.1 at DATA unless the header From is the mailbox', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO dev');
    const refused = await client.send('alarm@strict.contoso.example', ['ops@contoso.example'], 'From: alarm@strict.contoso.example\r\nSubject: no\r\n\r\nx\r\n');
    expect(refused.code).toBe(550);
    expect(refused.text).toMatch(/^5\.7\.1 From <alarm@strict\.contoso\.example> may not be sent through this relay: the From address must be <strict@contoso\.example>/);
    const accepted = await client.send('strict@contoso.example', ['ops@contoso.example'], 'From: strict@contoso.example\r\nSubject: yes\r\nX-Test-Id: route-reject-ok\r\n\r\nx\r\n');
    expect(accepted.code).toBe(250);
    await client.quit();
    expect((await waitForDelivery(h.emulator, 'route-reject-ok')).mailbox).toBe('strict@contoso.example');
  });

  it('spreads a pool route over its mailboxes and matches on the client address', async () => {
    h.emulator.mail.latencyMs = 150; // keep mail queued so the pool sees load
    await Promise.all(Array.from({ length: 6 }, (_, i) => send({ from: `sensor${i}@pool.contoso.example`, subject: `pool ${i}`, headers: { 'X-Test-Id': `pool-${i}` } })));
    const boxes = new Set<string>();
    for (let i = 0; i < 6; i++) boxes.add((await waitForDelivery(h.emulator, `pool-${i}`)).mailbox);
    h.emulator.mail.latencyMs = 0;
    expect([...boxes].sort()).toEqual(['pool1@contoso.example', 'pool2@contoso.example']);
  });

  it('keeps the From address but neutralises an address-like display name, so Exchange does not refuse Send As', async () => {
    await send({ from: `"printer@contoso.example" <${MAILBOX}>`, subject: 'printer', headers: { 'X-Test-Id': 'display-at' } });
    const message = await waitForDelivery(h.emulator, 'display-at');
    expect((await simpleParser(message.mime as Buffer)).from?.value[0]).toEqual({ address: MAILBOX, name: 'printer at contoso.example' });
  });

  it('falls back to graph.mailbox when no route matches (keep)', async () => {
    await send({ from: MAILBOX, subject: 'default', headers: { 'X-Test-Id': 'route-default' } });
    expect((await waitForDelivery(h.emulator, 'route-default')).mailbox).toBe(MAILBOX);
  });
});

describe('no route and no default mailbox', () => {
  it('refuses with 550 5.7.1 at RCPT when no route can match, and at DATA when only the header From could have', async () => {
    const solo = await startHarness({ config: { graph: { mailbox: undefined }, routes: [{ clients: ['10.0.0.0/8'], mailbox: 'branch1@contoso.example' }, { senders: ['*@scans.contoso.example'], clients: ['127.0.0.1/32'], mailbox: 'scans@contoso.example' }] } });
    try {
      const client = await RawSmtpClient.connect(solo.port);
      await client.reply();
      await client.command('EHLO dev');
      // From 127.0.0.1 only the sender route is possible; its header From decides at DATA.
      const data = await client.send('someone@else.example', ['ops@contoso.example'], 'From: someone@else.example\r\nSubject: x\r\n\r\nx\r\n');
      expect(data.code).toBe(550);
      expect(data.text).toMatch(/^5\.7\.1 /);
      await client.quit();
      const other = await RawSmtpClient.connect(solo.port, '127.0.0.1', '127.0.0.2');
      await other.reply();
      await other.command('EHLO dev');
      await other.command('MAIL FROM:<someone@else.example>');
      const rcpt = await other.command('RCPT TO:<ops@contoso.example>');
      expect(rcpt.code).toBe(550);
      expect(rcpt.text).toMatch(/^5\.7\.1 /);
      await other.quit();
    } finally {
      await solo.close();
    }
  });
});

describe('two tenants behind one relay', () => {
  it('sends each route with its own tenant and app', async () => {
    const t = await startHarness({
      emulator: {
        extraTenants: ['fabrikam-tenant'],
        apps: [
          { clientId: 'test-client', tenantId: 'test-tenant', secrets: ['test-secret-value-3f9a'], roles: ['Mail.Send'] },
          { clientId: 'fabrikam-app', tenantId: 'fabrikam-tenant', secrets: ['fabrikam-secret'], roles: ['Mail.Send'] },
        ],
        mailboxes: [
          { upn: MAILBOX, displayName: 'Contoso relay', tenantId: 'test-tenant' },
          { upn: 'alerts@fabrikam.example', displayName: 'Fabrikam alerts', tenantId: 'fabrikam-tenant' },
        ],
      },
      config: {
        routes: [{ senders: ['*@fabrikam.example'], mailbox: 'alerts@fabrikam.example', graph: { tenantId: 'fabrikam-tenant', clientId: 'fabrikam-app', auth: { method: 'clientSecret', clientSecret: 'fabrikam-secret' } } }],
      },
    });
    try {
      // The route's graph settings name the emulator as authority and endpoint like the default.
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: t.port, secure: false, ignoreTLS: true });
      await transport.sendMail({ from: 'nas@fabrikam.example', to: 'ops@fabrikam.example', subject: 'f', text: 'x', headers: { 'X-Test-Id': 'tenant-b' } });
      await transport.sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'c', text: 'x', headers: { 'X-Test-Id': 'tenant-a' } });
      const b = await waitForDelivery(t.emulator, 'tenant-b');
      const a = await waitForDelivery(t.emulator, 'tenant-a');
      expect(b).toMatchObject({ mailbox: 'alerts@fabrikam.example', sentBy: 'fabrikam-app' });
      expect(a).toMatchObject({ mailbox: MAILBOX, sentBy: 'test-client' });
    } finally {
      await t.close();
    }
  });
});
