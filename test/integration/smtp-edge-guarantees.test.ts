/**
 * The SMTP edge's guarantees from the outside audit (issue 11), each reproduced over real loopback
 * sockets against a real relay, with the Graph emulator recording what Graph received.
 */
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
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
