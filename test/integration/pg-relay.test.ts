/**
 * The relay on the shared PostgreSQL queue, end to end over loopback: 250 only after the commit,
 * delivery through leases, two relays on one database keeping Graph's per-mailbox limits and one
 * Retry-After together, and a database outage answered with 451 4.3.0 within seconds, /readyz
 * saying why, and everything resuming by itself.
 */
import { request } from 'undici';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRelay, type RunningRelay } from '../../src/app.js';
import { validateConfig } from '../../src/config/load.js';
import { captureLogger, MAILBOX, relayConfigInput, startHarness, startTestEmulator, waitForDelivery, type Harness } from '../helpers/harness.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let cluster: PgCluster;
beforeAll(async () => {
  cluster = await startPgCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const message = (testId: string) => `From: device@contoso.example\r\nTo: ops@contoso.example\r\nSubject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nbody\r\n`;

async function sendRaw(port: number, testId: string): Promise<{ code: number; text: string; ms: number }> {
  const started = Date.now();
  const client = await RawSmtpClient.connect(port);
  try {
    await client.reply();
    await client.command('EHLO sender.test');
    const reply = await client.send('device@contoso.example', ['ops@contoso.example'], message(testId));
    return { ...reply, ms: Date.now() - started };
  } finally {
    await client.quit().catch(() => undefined);
  }
}

async function rowState(url: string, testId: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ state: string }>(
      `SELECT m.state FROM relay.messages m JOIN relay.chunks c ON c.message_id = m.id WHERE position($1::bytea in c.data) > 0`,
      [Buffer.from(`X-Test-Id: ${testId}`)],
    );
    return rows[0]?.state ?? null;
  } finally {
    await client.end();
  }
}

describe('relay on the PostgreSQL spool', () => {
  let url: string;
  let h: Harness;
  beforeAll(async () => {
    url = await cluster.createDatabase();
    h = await startHarness({ config: { spool: { backend: 'postgres', postgres: { url, leaseTimeout: '5s' } } } });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
  });

  it('answers 250 only once the message is committed, then delivers it through a lease', async () => {
    h.emulator.faults.add({ route: 'sendMail', delayMs: 1500 });
    const reply = await sendRaw(h.port, 'pg-committed');
    expect(reply.code).toBe(250);
    // Right after the 250 the message is in the database, queued (the slow Graph call holds it there).
    expect(await rowState(url, 'pg-committed')).toBe('queued');
    await waitForDelivery(h.emulator, 'pg-committed');
    await until(async () => (await rowState(url, 'pg-committed')) === null, 5000);
    const delivered = h.logs.records.find((r) => r.event === 'delivery.delivered');
    expect(delivered?.node).toMatch(/:\d+$/);
  });

  it('while the database is down: 451 4.3.0 within seconds, /readyz says why, and all resumes by itself', async () => {
    await cluster.stopServer();
    try {
      const refused = await sendRaw(h.port, 'pg-down');
      expect(refused.code).toBe(451);
      expect(refused.text).toMatch(/^4\.3\.0 /);
      expect(refused.ms).toBeLessThan(8000);
      const second = await sendRaw(h.port, 'pg-down-2');
      expect(second.code).toBe(451);
      expect(second.ms).toBeLessThan(3000); // known down: refused without waiting for a connection
      const ready = await request(`${h.relay.admin?.url}/readyz`);
      expect(ready.statusCode).toBe(503);
      const body = (await ready.body.json()) as { checks: { spool: { ok: boolean; detail: string } } };
      expect(body.checks.spool.detail).toMatch(/database unreachable/);
    } finally {
      await cluster.startServer();
    }
    await until(async () => (await sendRaw(h.port, 'pg-back')).code === 250, 20_000);
    await waitForDelivery(h.emulator, 'pg-back', 20_000);
    await until(async () => (await request(`${h.relay.admin?.url}/readyz`)).statusCode === 200, 10_000);
    expect(h.logs.records.some((r) => r.event === 'spool.database_unavailable')).toBe(true);
    expect(h.logs.records.some((r) => r.event === 'spool.database_available')).toBe(true);
  }, 60_000);

  it('queue commands act on the shared queue: hold keeps a message back, release sends it', async () => {
    h.emulator.faults.add({ route: 'sendMail', status: 503, times: 10_000 });
    expect((await sendRaw(h.port, 'pg-hold')).code).toBe(250);
    let id = '';
    await until(async () => {
      const deferred = (await h.relay.queue.list()).find((i) => i.entry.attempts > 0);
      id = deferred?.id ?? '';
      return id !== '';
    }, 10_000);
    // Between retries the message is not leased; while an attempt runs the hold is refused (409).
    await until(async () => h.relay.queue.hold(id).then(() => true, () => false), 10_000);
    expect((await h.relay.queue.show(id)).state).toBe('held');
    h.emulator.faults.clear();
    const delivered = h.emulator.mail.delivered.length;
    await new Promise((r) => setTimeout(r, 1500));
    expect(h.emulator.mail.delivered.length).toBe(delivered); // held: not sent although Graph answers again
    await h.relay.queue.release(id);
    await waitForDelivery(h.emulator, 'pg-hold', 10_000);
  });
});

describe('two relays on one database', () => {
  it('keep at most 4 requests in flight per mailbox together, and both honour one Retry-After', async () => {
    const url = await cluster.createDatabase();
    const emulator = await startTestEmulator();
    emulator.mail.latencyMs = 100;
    const relays: RunningRelay[] = [];
    try {
      for (let i = 0; i < 2; i += 1) {
        const config = validateConfig(relayConfigInput(emulator, '/nonexistent', { spool: { backend: 'postgres', postgres: { url, leaseTimeout: '5s' } } }), {}, 'test');
        relays.push(await startRelay({ config, logger: captureLogger('info').logger, extraCaPem: [emulator.caPem] }));
      }
      emulator.faults.add({ route: 'sendMail', status: 429, code: 'ApplicationThrottled', retryAfter: '1', times: 1 });
      const total = 40;
      const sends = [];
      for (let i = 0; i < total; i += 1) sends.push(sendRaw(relays[i % 2]!.smtp.addresses[0]!.port, `pair-${i}`));
      const replies = await Promise.all(sends);
      expect(replies.every((r) => r.code === 250)).toBe(true);
      await emulator.mail.waitForDelivered(total, 30_000);
      expect(emulator.mail.maxInFlightSeen.get(MAILBOX)).toBeLessThanOrEqual(4);
      expect(emulator.mail.maxInFlightSeen.get(MAILBOX)).toBeGreaterThanOrEqual(3);
      expect(emulator.mail.concurrencyThrottles).toBe(0);
      expect(emulator.mail.retryAfterViolations).toEqual([]);
      const ids = emulator.mail.delivered.map((m) => /X-Test-Id: (\S+)/.exec(m.mime?.toString('latin1') ?? '')?.[1]);
      expect(new Set(ids).size).toBe(total);
    } finally {
      await Promise.all(relays.map((r) => r.stop(2000)));
      await emulator.close();
    }
  }, 90_000);
});
