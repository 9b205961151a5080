/**
 * The SMTP edge's guarantees from the outside audit (issue 11), each reproduced over real loopback
 * sockets against a real relay, with the Graph emulator recording what Graph received.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mailboxKey } from '../../src/mime/mailbox.js';
import { hashPassword } from '../../src/smtp/local-auth.js';
import { startHarness, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function metric(harness: Harness, name: string): Promise<number> {
  const text = await (await fetch(`${harness.relay.admin?.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

const refusals = (harness: Harness, code: number) => harness.logs.records.filter((r) => r.event === 'smtp.refused' && r.code === code);

async function connect(harness: Harness, helo = 'edge-test'): Promise<RawSmtpClient> {
  const client = await RawSmtpClient.connect(harness.port);
  expect((await client.reply()).code).toBe(220);
  expect((await client.command(`EHLO ${helo}`)).code).toBe(250);
  return client;
}

describe('every refusal is logged once and counted (item 16)', () => {
  it('logs smtp.refused once and counts 530 5.7.0 (no AUTH), 552 for a declared SIZE= and 552 for actual bytes', async () => {
    const users = [{ username: 'device', passwordHash: await hashPassword('device-pass') }];
    h = await startHarness({ config: { smtp: { maxMessageSize: 2000, auth: { required: true, users } } } });
    const client = await connect(h);
    const noAuth = await client.command('MAIL FROM:<device@contoso.example>');
    expect(noAuth.code).toBe(530);
    expect(noAuth.text).toMatch(/^5\.7\.0 /);
    expect((await client.command(`AUTH PLAIN ${Buffer.from('\0device\0device-pass').toString('base64')}`)).code).toBe(235);
    const declared = await client.command('MAIL FROM:<device@contoso.example> SIZE=50000');
    expect(declared.code).toBe(552);
    const actual = await client.send('device@contoso.example', ['ops@contoso.example'], `Subject: big\r\n\r\n${'x'.repeat(3000)}\r\n`);
    expect(actual.code).toBe(552);
    await client.quit();

    await until(() => refusals(h!, 552).length >= 2);
    expect(refusals(h, 530)).toHaveLength(1);
    expect(refusals(h, 530)[0]).toMatchObject({ client: '127.0.0.1', reason: expect.stringMatching(/auth/i) });
    expect(refusals(h, 552)).toHaveLength(2);
    expect(refusals(h, 552).map((r) => r.reason)).toEqual([expect.stringMatching(/maximum message size/), expect.stringMatching(/maximum message size/)]);
    expect(await metric(h, 'relay_smtp_refused_total{reason="530"}')).toBe(1);
    expect(await metric(h, 'relay_smtp_refused_total{reason="552"}')).toBe(2);
  });
});

describe('the AUTH failure limit holds under parallel connections (item 6)', () => {
  it('with maxFailures 5, evaluates at most 5 of 40 parallel wrong AUTH PLAIN guesses (535) and answers the rest 454 4.7.0', async () => {
    const users = [{ username: 'device', passwordHash: await hashPassword('device-pass') }];
    h = await startHarness({ config: { smtp: { maxConnections: 100, auth: { users, maxFailures: 5 } } } });
    const harness = h;
    const attempt = async (i: number) => {
      const client = await connect(harness, `guess-${i}`);
      try {
        return await client.command(`AUTH PLAIN ${Buffer.from(`\0device\0wrong-${i}`).toString('base64')}`);
      } finally {
        client.destroy();
      }
    };
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => attempt(i)));
    const codes = replies.map((r) => r.code);
    expect(codes.filter((c) => c === 535)).toHaveLength(5);
    expect(codes.filter((c) => c === 454)).toHaveLength(35);
    expect(replies.find((r) => r.code === 454)?.text).toMatch(/^4\.7\.0 /);
  });

  it('does not count a successful login against the limit, even when it ran in parallel with failures', async () => {
    const users = [{ username: 'device', passwordHash: await hashPassword('device-pass') }];
    h = await startHarness({ config: { smtp: { auth: { users, maxFailures: 2 } } } });
    const harness = h;
    const attempt = async (password: string) => {
      const client = await connect(harness);
      try {
        return (await client.command(`AUTH PLAIN ${Buffer.from(`\0device\0${password}`).toString('base64')}`)).code;
      } finally {
        client.destroy();
      }
    };
    expect(await Promise.all([attempt('device-pass'), attempt('device-pass'), attempt('wrong')])).toEqual([235, 235, 535]);
    expect(await attempt('device-pass')).toBe(235);
    expect(await attempt('wrong')).toBe(535);
    expect(await attempt('device-pass')).toBe(454);
  });
});

describe('envelope addresses are RFC 5321 mailboxes, quoted when they become header fields (item 3)', () => {
  it('refuses recipients that a header parser would read as other addresses with 501 5.1.3, so Graph sends to exactly the envelope', async () => {
    h = await startHarness();
    const client = await connect(h);
    expect((await client.command('MAIL FROM:<alice,victim@evil.example>')).text).toMatch(/^5\.1\.7 /);
    expect((await client.command('MAIL FROM:<device@contoso.example>')).code).toBe(250);
    expect((await client.command('RCPT TO:<ops@contoso.example>')).code).toBe(250);
    for (const forged of ['alice,victim@evil.example', '(x)bob@evil.example', 'list:carol@evil.example', 'dave;eve@evil.example']) {
      const reply = await client.command(`RCPT TO:<${forged}>`);
      expect({ forged, code: reply.code }).toEqual({ forged, code: 501 });
      expect(reply.text).toMatch(/^5\.1\.3 /);
    }
    expect((await client.command('DATA')).code).toBe(354);
    client.write('Subject: forged recipients\r\nX-Test-Id: forged-rcpt\r\n\r\nx\r\n.\r\n');
    expect((await client.reply()).code).toBe(250);
    await client.quit();
    await until(() => h!.emulator.mail.delivered.length === 1);
    expect(h.emulator.mail.delivered[0]?.recipients).toEqual(['ops@contoso.example']);
    expect(refusals(h, 501).map((r) => r.reason)).toEqual([expect.stringMatching(/sender/), ...Array(4).fill(expect.stringMatching(/recipient/))]);
  });

  it('accepts quoted local parts and writes them quoted in the Bcc field, so each stays one recipient', async () => {
    h = await startHarness();
    const envelope = ['"alice,victim"@contoso.example', '"list:carol"@contoso.example', '"(x)bob"@contoso.example'];
    const client = await connect(h);
    const reply = await client.send('device@contoso.example', envelope, 'Subject: quoted\r\nTo: ops@contoso.example\r\n\r\nx\r\n');
    expect(reply.code).toBe(250);
    await client.quit();
    await until(() => h!.emulator.mail.delivered.length === 1);
    const delivered = h.emulator.mail.delivered[0]!;
    expect(delivered.mime?.toString()).toContain('Bcc: "alice,victim"@contoso.example,\r\n "list:carol"@contoso.example,\r\n "(x)bob"@contoso.example\r\n');
    // To names a header-only address (skipped by default): the recipients are the envelope, each
    // one once (the emulator's parser drops the quotes of a bare addr-spec; mailboxKey adds them back).
    expect(delivered.recipients.map(mailboxKey).sort()).toEqual(envelope.map(mailboxKey).sort());
  });
});

describe('the Received trace field never names a hidden recipient (item 4)', () => {
  it('omits "for" when the only envelope recipient is a Bcc, and keeps it when that recipient is visible', async () => {
    h = await startHarness({ config: { delivery: { headerOnlyRecipients: 'deliver', retry: { minDelay: '100ms', maxDelay: '500ms' }, perMailbox: { messagesPerMinute: 0 } } } });
    const client = await connect(h);
    const hidden = 'From: device@contoso.example\r\nTo: team@contoso.example\r\nSubject: hidden\r\nX-Test-Id: for-hidden\r\n\r\nx\r\n';
    expect((await client.send('device@contoso.example', ['secret-bcc@contoso.example'], hidden)).code).toBe(250);
    const visible = 'From: device@contoso.example\r\nTo: ops@contoso.example\r\nSubject: visible\r\nX-Test-Id: for-visible\r\n\r\nx\r\n';
    expect((await client.send('device@contoso.example', ['ops@contoso.example'], visible)).code).toBe(250);
    await client.quit();
    await until(() => h!.emulator.mail.delivered.length === 2);
    const mime = (id: string) => h!.emulator.mail.delivered.find((m) => m.mime?.toString().includes(`X-Test-Id: ${id}`))?.mime?.toString() ?? '';
    const received = (text: string) => /^Received:[^\r]*(\r\n[ \t][^\r]*)*/m.exec(text)?.[0] ?? '';
    // team@ (header-only, delivered) sees this trace field: it must not reveal secret-bcc@.
    expect(received(mime('for-hidden'))).not.toMatch(/secret-bcc|for </);
    expect(h.emulator.mail.delivered.find((m) => m.mime?.toString().includes('for-hidden'))?.recipients.sort()).toEqual(['secret-bcc@contoso.example', 'team@contoso.example']);
    expect(received(mime('for-visible'))).toMatch(/\r\n\tfor <ops@contoso\.example>;/);
  });
});

describe('RCPT TO:<postmaster> (item 15)', () => {
  it('accepts the domainless postmaster (RFC 5321 4.5.1) and delivers it to the postmaster of the sending mailbox domain', async () => {
    h = await startHarness();
    const client = await connect(h);
    const reply = await client.send('device@contoso.example', ['PostMaster'], 'From: device@contoso.example\r\nSubject: to the postmaster\r\nX-Test-Id: postmaster\r\n\r\nx\r\n');
    expect(reply.code).toBe(250);
    await client.quit();
    await until(() => h!.emulator.mail.delivered.length === 1);
    expect(h.emulator.mail.delivered[0]?.recipients).toEqual(['postmaster@contoso.example']);
    expect(h.logs.records.find((r) => r.event === 'smtp.accepted')).toMatchObject({ recipients: 1, mailbox: 'relay@contoso.example' });
  });
});

describe('allowedSenders and fromPolicy: reject apply to what recipients see (item 2)', () => {
  it('refuses at DATA with 550 5.7.1 any From or Sender address the user may not send as, or that a reject route does not send from', async () => {
    h = await startHarness({
      emulator: {
        mailboxes: [
          { upn: 'relay@contoso.example', displayName: 'Relay' },
          { upn: 'scans@contoso.example', displayName: 'Scans' },
          { upn: 'strict@contoso.example', displayName: 'Strict' },
        ],
      },
      config: {
        smtp: { auth: { users: [{ username: 'branch1', passwordHash: await hashPassword('b1-pass'), allowedSenders: ['alerts@branch1.example'] }] } },
        routes: [
          { senders: ['*@scans.contoso.example'], mailbox: 'scans@contoso.example', fromPolicy: 'keep' },
          { senders: ['strict@contoso.example'], mailbox: 'strict@contoso.example', fromPolicy: 'reject' },
        ],
      },
    });
    const message = (id: string, fields: string) => `${fields}Subject: ${id}\r\nX-Test-Id: ${id}\r\n\r\nx\r\n`;

    const branch = await connect(h);
    expect((await branch.command(`AUTH PLAIN ${Buffer.from('\0branch1\0b1-pass').toString('base64')}`)).code).toBe(235);
    const asBranch = (id: string, fields: string) => branch.send('alerts@branch1.example', ['ops@contoso.example'], message(id, fields));
    const forged = [
      await asBranch('ceo-from', 'From: ceo@scans.contoso.example\r\n'),
      await asBranch('second-from', 'From: alerts@branch1.example, ceo@scans.contoso.example\r\n'),
      await asBranch('second-field', 'From: alerts@branch1.example\r\nFrom: ceo@scans.contoso.example\r\n'),
      await asBranch('sender-field', 'From: alerts@branch1.example\r\nSender: ceo@scans.contoso.example\r\n'),
    ];
    expect((await asBranch('branch-ok', 'From: Branch 1 <alerts@branch1.example>\r\nSender: alerts@branch1.example\r\n')).code).toBe(250);
    await branch.quit();

    const strict = await connect(h);
    const asStrict = (id: string, fields: string) => strict.send('strict@contoso.example', ['ops@contoso.example'], message(id, fields));
    forged.push(await asStrict('strict-second-from', 'From: strict@contoso.example, boss@contoso.example\r\n'));
    forged.push(await asStrict('strict-sender', 'From: strict@contoso.example\r\nSender: boss@contoso.example\r\n'));
    expect((await asStrict('strict-ok', 'From: strict@contoso.example\r\n')).code).toBe(250);
    await strict.quit();

    for (const reply of forged) {
      expect(reply.code).toBe(550);
      expect(reply.text).toMatch(/^5\.7\.1 (From|Sender) <(ceo@scans\.contoso\.example|boss@contoso\.example)> /);
    }
    // The forged ones were refused at DATA (nothing spooled); the two allowed ones are all Graph got.
    await until(() => h!.emulator.mail.delivered.length === 2);
    expect(h.emulator.mail.delivered.map((m) => [m.mailbox, /X-Test-Id: (\S+)/.exec(m.mime?.toString() ?? '')?.[1]]).sort()).toEqual([
      ['relay@contoso.example', 'branch-ok'],
      ['strict@contoso.example', 'strict-ok'],
    ]);
  });
});

describe('bounces are UTF-8 and cannot inject header fields (item 5)', () => {
  it('returns a DSN to a UTF-8 sender (SMTPUTF8) with the address intact', async () => {
    h = await startHarness();
    h.emulator.faults.add({ route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
    const client = await connect(h);
    expect((await client.command('MAIL FROM:<jörg@example.de> SMTPUTF8')).code).toBe(250);
    expect((await client.command('RCPT TO:<empfänger@contoso.example>')).code).toBe(250);
    expect((await client.command('DATA')).code).toBe(354);
    client.write(Buffer.from('From: Jörg <jörg@example.de>\r\nSubject: Grüße\r\n\r\nx\r\n.\r\n', 'utf8'));
    expect((await client.reply()).code).toBe(250);
    await client.quit();
    await until(() => h!.emulator.mail.delivered.length === 1);
    const dsn = h.emulator.mail.delivered[0]!;
    expect(dsn.recipients).toEqual(['jörg@example.de']);
    const text = (dsn.mime as Buffer).toString('utf8');
    expect(text).toContain('\r\nTo: <jörg@example.de>\r\n');
    expect(text).toContain('Recipients: empfänger@contoso.example');
    expect(text).toContain('Final-Recipient: utf-8; empfänger@contoso.example');
    expect(text).toContain('Content-Type: message/global-delivery-status');
    // The original header block is carried byte for byte.
    expect(text).toContain('From: Jörg <jörg@example.de>\r\nSubject: Grüße\r\n');
  });

  it('refuses CR, LF and NUL in MAIL FROM and RCPT TO with 501', async () => {
    h = await startHarness();
    const client = await connect(h);
    for (const forged of ['a\rBcc: victim@evil.example', 'a\u0000b@contoso.example']) {
      expect((await client.command(`MAIL FROM:<${forged}>`)).code).toBe(501);
    }
    expect((await client.command('MAIL FROM:<device@contoso.example>')).code).toBe(250);
    expect((await client.command('RCPT TO:<a\u0000b@contoso.example>')).code).toBe(501);
    await client.quit();
  });
});
