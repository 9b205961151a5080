/**
 * Graph misbehaving: throttling with Retry-After (integer, fractional, HTTP-date), 503, connection
 * resets and 401s. Everything must be delivered, no request may reach a mailbox before its
 * Retry-After has passed, and never more than 4 requests may be in flight per mailbox.
 * Run on both spools: the file spool (one node's scheduler) and the shared PostgreSQL queue (the
 * claim loop, where pauses and in-flight limits live in the database); one throwaway PostgreSQL
 * server for the file, a fresh database for each harness.
 */
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backendOptions, MAILBOX, startHarness as startHarnessOn, waitForDelivery, type Harness, type HarnessOptions, type SpoolBackend } from '../helpers/harness.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';

let cluster: PgCluster | undefined;
beforeAll(async () => {
  cluster = await startPgCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function sendBatch(harness: Harness, prefix: string, count: number): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: harness.port, secure: false, ignoreTLS: true, pool: true, maxConnections: 4 });
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      transport.sendMail({ from: 'rmm@contoso.example', to: 'ops@contoso.example', subject: `${prefix} ${i}`, text: `alert ${i}`, headers: { 'X-Test-Id': `${prefix}-${i}` } }),
    ),
  );
  transport.close();
}

async function allDelivered(harness: Harness, prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await waitForDelivery(harness.emulator, `${prefix}-${i}`, 30_000);
}

describe.each(['filesystem', 'postgres'] as const)('%s spool', (backend: SpoolBackend) => {
  const startHarness = (options: Omit<HarnessOptions, 'postgres'> = {}) => startHarnessOn({ ...options, ...backendOptions(backend, cluster) });

  describe('recovery from Graph faults', () => {
    it('defers a 429 and honours Retry-After given in seconds, fractional seconds and as an HTTP-date', async () => {
      h = await startHarness();
      h.emulator.faults.add(
        { route: 'sendMail', status: 429, code: 'ApplicationThrottled', retryAfter: '1' },
        { route: 'sendMail', status: 429, retryAfter: '0.6' },
        { route: 'sendMail', status: 429, retryAfter: new Date(Date.now() + 2000).toUTCString() },
      );
      await sendBatch(h, 'throttle', 6);
      await allDelivered(h, 'throttle', 6);
      expect(h.emulator.faults.pending).toBe(0);
      expect(h.emulator.mail.retryAfterViolations).toEqual([]);
      const deferred = h.logs.records.filter((r) => r.event === 'delivery.deferred');
      expect(deferred.length).toBe(3);
      for (const d of deferred) expect(d.requestId).toMatch(/^[0-9a-f-]{36}$/);
    });

    it('recovers from 503, connection resets and a forced token refresh after 401', async () => {
      h = await startHarness();
      h.emulator.faults.add(
        { route: 'sendMail', status: 503, retryAfter: '1' },
        { route: 'sendMail', reset: true, times: 2 },
      );
      await sendBatch(h, 'mixed', 8);
      await allDelivered(h, 'mixed', 8);

      // Tokens revoked at Graph: the first 401 forces one refresh, then delivery continues.
      const grantsBefore = h.emulator.identity.grants.get('client_credentials') ?? 0;
      h.emulator.identity.expireAllAccessTokens();
      await sendBatch(h, 'after401', 3);
      await allDelivered(h, 'after401', 3);
      expect(h.emulator.identity.grants.get('client_credentials')).toBeGreaterThan(grantsBefore);
      expect(h.emulator.mail.retryAfterViolations).toEqual([]);
      expect(h.emulator.mail.delivered.length).toBe(11);
    });

    it('never has more than 4 requests in flight per mailbox, even with 60 queued and slow Graph', async () => {
      h = await startHarness();
      h.emulator.mail.latencyMs = 100;
      await sendBatch(h, 'conc', 60);
      await allDelivered(h, 'conc', 60);
      expect(h.emulator.mail.maxInFlightSeen.get(MAILBOX)).toBe(4);
      expect(h.emulator.mail.concurrencyThrottles).toBe(0);
    });

    it('keeps retrying (and says so loudly) when the mailbox is unknown, instead of failing the mail', async () => {
      h = await startHarness({ config: { graph: { mailbox: 'typo@contoso.example' } } });
      await sendBatch(h, 'typo', 1);
      const deadline = Date.now() + 10_000;
      while (!h.logs.records.some((r) => r.event === 'delivery.deferred' && (r.attempts as number) >= 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const deferred = h.logs.records.filter((r) => r.event === 'delivery.deferred');
      expect(deferred.length).toBeGreaterThanOrEqual(2);
      expect(deferred[0]).toMatchObject({ level: 'error', operatorActionRequired: true, status: 404, code: 'ErrorInvalidUser' });
      expect(h.logs.records.some((r) => r.event === 'delivery.failed')).toBe(false);
    });

    it('fails permanently on a 400 and records the reason with the request-id in failed/', async () => {
      h = await startHarness();
      h.emulator.faults.add({ route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
      await sendBatch(h, 'perm', 1);
      const deadline = Date.now() + 10_000;
      while (!h.logs.records.some((r) => r.event === 'delivery.failed') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const failed = await h.relay.spool.list('failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]?.failReason).toContain('ErrorInvalidRecipients');
      expect(failed[0]?.lastError?.requestId).toMatch(/^[0-9a-f-]{36}$/);
      // Only the bounce (from the null sender) may wait in the queue now, not the failed message.
      expect((await h.relay.spool.list('queue')).map((e) => e.envelope.mailFrom)).not.toContain('rmm@contoso.example');
    });
  });

  describe('token endpoint outages', () => {
    it('defers while the token endpoint answers 503/429 and delivers as soon as it recovers (no 60 s MSAL lock-out)', async () => {
      h = await startHarness();
      h.emulator.faults.add({ route: 'token', status: 503, times: 2 }, { route: 'token', status: 429, retryAfter: '1' });
      const started = Date.now();
      await sendBatch(h, 'tokfail', 2);
      await allDelivered(h, 'tokfail', 2);
      expect(Date.now() - started).toBeLessThan(20_000);
      const deferred = h.logs.records.filter((r) => r.event === 'delivery.deferred');
      expect(deferred.length).toBeGreaterThanOrEqual(1);
      expect(deferred[0]).toMatchObject({ level: 'warn', reason: expect.stringContaining('token acquisition failed') });
    });
  });
});
