/**
 * The SMTP edge over raw sockets: the replies a misbehaving or careless client gets, with their
 * enhanced status codes, and that nothing it does takes the process down or reaches the spool.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, type Harness } from '../helpers/harness.js';
import { until } from '../helpers/wait.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { tracesOf, untilNothingLeftBehind } from '../helpers/spool-traces.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ config: { smtp: { maxMessageSize: 20_000, maxRecipients: 3 } } });
});
afterAll(async () => {
  await h.close();
});

async function session(): Promise<RawSmtpClient> {
  const client = await RawSmtpClient.connect(h.port);
  const greeting = await client.reply();
  expect(greeting.code).toBe(220);
  expect((await client.command('EHLO client.test')).code).toBe(250);
  return client;
}


describe('SMTP edge', () => {
  it('advertises PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES and the enforced SIZE', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    const ehlo = await client.command('EHLO client.test');
    expect(ehlo.text.split('\n').slice(1)).toEqual(expect.arrayContaining(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE 20000']));
    expect(ehlo.text).not.toMatch(/STARTTLS|AUTH/);
    await client.quit();
  });

  it('refuses a declared SIZE over the limit at MAIL FROM with 552 5.3.4', async () => {
    const client = await session();
    const reply = await client.command('MAIL FROM:<a@contoso.example> SIZE=999999');
    expect(reply.code).toBe(552);
    expect(reply.text).toMatch(/^5\.3\.4 /);
    await client.quit();
  });

  it('refuses an actual message over the limit with 552 5.3.4 and spools nothing', async () => {
    const acceptedBefore = h.logs.records.filter((r) => r.event === 'smtp.accepted').length;
    const client = await session();
    const reply = await client.send('a@contoso.example', ['b@contoso.example'], `Subject: big\r\nX-Test-Id: too-big\r\n\r\n${`${'x'.repeat(76)}\r\n`.repeat(400)}`);
    expect(reply.code).toBe(552);
    expect(reply.text).toMatch(/^5\.3\.4 /);
    // The session goes on: the next message is accepted.
    expect((await client.send('a@contoso.example', ['b@contoso.example'], 'Subject: small\r\nX-Test-Id: small-after-big\r\n\r\nok\r\n')).code).toBe(250);
    await client.quit();
    // The relay's own size enforcement refused it (intake.ts, with its own wording), not only
    // smtp-server (rejectOversized answers 552 whatever the relay did, even after a truncated
    // copy was spooled).
    const ownRefusal = h.logs.records.find((r) => r.event === 'smtp.refused' && r.code === 552 && r.queueId && r.reason === '5.3.4 Message exceeds fixed maximum message size of 20000 bytes');
    expect(ownRefusal).toBeDefined();
    expect(await tracesOf(h.spoolDir, ownRefusal?.queueId as string)).toEqual([]);
    // No record of the refused message anywhere (tmp/, journal records and segments, queue/,
    // failed/, corrupt/), now or once the accepted one is filed.
    expect(await tracesOf(h.spoolDir, 'X-Test-Id: too-big')).toEqual([]);
    await untilNothingLeftBehind(h.spoolDir);
    expect(await tracesOf(h.spoolDir, 'X-Test-Id: too-big')).toEqual([]);
    expect(h.logs.records.filter((r) => r.event === 'smtp.accepted').length).toBe(acceptedBefore + 1);
  });

  it('limits recipients per message with 452 4.5.3 (the client retries the rest later)', async () => {
    const client = await session();
    expect((await client.command('MAIL FROM:<a@contoso.example>')).code).toBe(250);
    for (let i = 0; i < 3; i++) expect((await client.command(`RCPT TO:<r${i}@contoso.example>`)).code).toBe(250);
    const fourth = await client.command('RCPT TO:<r3@contoso.example>');
    expect(fourth.code).toBe(452);
    expect(fourth.text).toMatch(/^4\.5\.3 /);
    await client.quit();
  });

  it('answers out-of-order commands and syntax errors with 5xx, keeping the session', async () => {
    const client = await session();
    expect((await client.command('RCPT TO:<b@contoso.example>')).code).toBe(503);
    expect((await client.command('DATA')).code).toBe(503);
    expect((await client.command('MAIL FROM:not-an-address')).code).toBeGreaterThanOrEqual(500);
    expect((await client.command('FROB')).code).toBe(500);
    expect((await client.command('MAIL FROM:<a@contoso.example>')).code).toBe(250);
    expect((await client.command('RCPT TO:<no-at-sign>')).code).toBeGreaterThanOrEqual(500);
    await client.quit();
  });

  it('handles a pipelined transaction in one write', async () => {
    const client = await session();
    client.write('MAIL FROM:<p@contoso.example>\r\nRCPT TO:<q@contoso.example>\r\nDATA\r\n');
    expect((await client.reply()).code).toBe(250);
    expect((await client.reply()).code).toBe(250);
    expect((await client.reply()).code).toBe(354);
    client.write('Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    const done = await client.reply();
    expect(done.code).toBe(250);
    expect(done.text).toMatch(/^2\.6\.0 Ok: queued as [0-9A-Z]{19}$/);
    expect((await client.reply()).code).toBe(221);
    client.destroy();
  });

  it('survives a client that disconnects in the middle of DATA, leaving nothing half-written', async () => {
    const client = await session();
    client.write('MAIL FROM:<a@contoso.example>\r\nRCPT TO:<b@contoso.example>\r\nDATA\r\n');
    await client.reply();
    await client.reply();
    await client.reply();
    client.write('Subject: cut\r\nX-Test-Id: cut-in-data\r\n\r\npartial body without end');
    await new Promise((r) => setTimeout(r, 50));
    client.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(await tracesOf(h.spoolDir, 'X-Test-Id: cut-in-data')).toEqual([]);
    await untilNothingLeftBehind(h.spoolDir);
    // Still serving.
    const next = await session();
    expect((await next.send('a@contoso.example', ['b@contoso.example'], 'Subject: after\r\n\r\nok\r\n')).code).toBe(250);
    await next.quit();
  });

  it('rejects HTTP requests sent to the SMTP port', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    const reply = await client.command('POST / HTTP/1.1');
    expect(reply.code).toBe(421);
    client.destroy();
  });
});
