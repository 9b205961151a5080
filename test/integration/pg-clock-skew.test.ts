/**
 * The database's clock is the cluster's (src/spool/postgres/clock-offset.ts): relays whose clocks
 * are off still agree on when a message is due and when a Retry-After pause ends. Three spools on
 * one real database: one on the true clock, one an hour slow, one an hour fast. Without the
 * conversion the slow relay found nothing due (a new message's run_at is its receiving relay's
 * "now"), and its pauses and retry times had already passed for every other relay.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SpoolEntry } from '../../src/spool/entry.js';
import { migrate } from '../../src/spool/postgres/migrations.js';
import { PgSpool } from '../../src/spool/postgres/pg-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { ClaimLimits, SpoolEvent } from '../../src/spool/spool.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { until } from '../helpers/wait.js';

const HOUR = 3_600_000;
const MAILBOX = 'relay@skew.example';
const LIMITS: ClaimLimits = { maxInFlightPerMailbox: 4, messagesPerMinute: 0, recipientsPerDay: 0, leaseMs: 30_000 };

let cluster: PgCluster;
const opened: PgSpool[] = [];
beforeAll(async () => {
  cluster = await startPgCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

interface Node {
  spool: PgSpool;
  now: () => number;
  notices: Array<{ event: string; fields: Record<string, unknown> }>;
}

async function nodes(): Promise<{ right: Node; slow: Node; fast: Node }> {
  const url = await cluster.createDatabase();
  const pool = new pg.Pool({ connectionString: url });
  await migrate(pool);
  await pool.end();
  const node = async (skewMs: number): Promise<Node> => {
    const now = () => Date.now() + skewMs;
    const notices: Node['notices'] = [];
    const spool = new PgSpool({ url, now, onNotice: (event, fields) => notices.push({ event, fields }) });
    opened.push(spool);
    await spool.recover();
    return { spool, now, notices };
  };
  return { right: await node(0), slow: await node(-HOUR), fast: await node(HOUR) };
}

async function accept(node: Node): Promise<SpoolEntry> {
  const id = newQueueId(node.now());
  const writer = await node.spool.beginMessage(id);
  await writer.write(Buffer.from('Subject: skew\r\n\r\nbody\r\n'));
  return writer.commit({ id, receivedAt: node.now(), envelope: { mailFrom: 'a@skew.example', rcptTo: ['b@skew.example'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: MAILBOX, messageId: '<m@skew>' });
}

describe('relays whose clocks are off share one queue on the database clock', () => {
  it('each relay measures its offset from the database and an operator is told when it is large', async () => {
    const { right, slow, fast } = await nodes();
    expect(Math.abs(await right.spool.measureClock())).toBeLessThan(50);
    expect(Math.abs((await slow.spool.measureClock()) - HOUR)).toBeLessThan(50);
    expect(Math.abs((await fast.spool.measureClock()) + HOUR)).toBeLessThan(50);
    expect(right.notices).toEqual([]);
    // Told once (at start), not at every measurement.
    expect(slow.notices).toHaveLength(1);
    expect(slow.notices[0]?.event).toBe('spool.clock_skew');
    expect(Math.abs((slow.notices[0]?.fields.offsetMs as number) - HOUR)).toBeLessThan(50);
  }, 60_000);

  it('a message accepted by one relay is due at once for a relay whose clock is an hour slow', async () => {
    const { right, slow, fast } = await nodes();
    const entry = await accept(right);
    const fromFast = await accept(fast);
    const leases = await slow.spool.claim('slow', 4, LIMITS, slow.now());
    expect(leases.map((l) => l.entry.id).sort()).toEqual([entry.id, fromFast.id].sort());
    // Each relay reads the due and received times on its own clock (a message's lifetime and age
    // count from the same moment on every relay).
    const seen = leases.find((l) => l.entry.id === entry.id)?.entry;
    expect(Math.abs((seen?.nextAttemptAt ?? 0) - (entry.nextAttemptAt - HOUR))).toBeLessThan(100);
    expect(Math.abs((seen?.receivedAt ?? 0) - (entry.receivedAt - HOUR))).toBeLessThan(100);
    const oldest = Math.min(entry.receivedAt, fromFast.receivedAt - HOUR);
    expect(Math.abs(((await slow.spool.clusterStats()).oldestReceivedAt ?? 0) - (oldest - HOUR))).toBeLessThan(100);
  }, 60_000);

  it("a slow relay's Retry-After pause holds the mailbox for every relay, and is heard on each relay's clock", async () => {
    const { right, slow, fast } = await nodes();
    await accept(right);
    const heard: SpoolEvent[] = [];
    right.spool.subscribe((e) => heard.push(e));
    await until(() => right.spool.hearsOthersNow(), 10_000);
    await slow.spool.pauseMailbox(MAILBOX, slow.now() + 3_000);
    // Read back from the database on each clock: three seconds from now.
    expect(Math.abs((await right.spool.mailboxPausedUntil(MAILBOX)) - (right.now() + 3_000))).toBeLessThan(500);
    expect(Math.abs((await fast.spool.mailboxPausedUntil(MAILBOX)) - (fast.now() + 3_000))).toBeLessThan(500);
    expect(await right.spool.claim('right', 4, LIMITS, right.now())).toEqual([]);
    expect(await fast.spool.claim('fast', 4, LIMITS, fast.now())).toEqual([]);
    await until(() => heard.some((e) => e.kind === 'pause'), 10_000);
    const pause = heard.find((e) => e.kind === 'pause') as Extract<SpoolEvent, { kind: 'pause' }>;
    expect(Math.abs(pause.untilMs - (right.now() + 3_000))).toBeLessThan(500);
  }, 60_000);

  it("a retry time set by a relay whose clock is off comes due when it says for the others", async () => {
    const { right, slow, fast } = await nodes();
    const entry = await accept(right);
    const [lease] = await slow.spool.claim('slow', 1, LIMITS, slow.now());
    expect(lease?.entry.id).toBe(entry.id);
    const retryAt = slow.now() + 2_000;
    expect(await slow.spool.settle(lease!, { kind: 'deferred', entry: { ...lease!.entry, attempts: 1, nextAttemptAt: retryAt } })).toBe(true);
    // Not due yet for anyone (the slow relay's "in 2 s" is not "an hour ago" for the others).
    expect(await right.spool.claim('right', 4, LIMITS, right.now())).toEqual([]);
    expect(await fast.spool.claim('fast', 4, LIMITS, fast.now())).toEqual([]);
    const listed = await right.spool.get(entry.id);
    expect(Math.abs((listed?.nextAttemptAt ?? 0) - (right.now() + 2_000))).toBeLessThan(500);
    // And due once the two seconds have passed.
    await until(async () => (await fast.spool.claim('fast', 4, LIMITS, fast.now())).length === 1, 10_000);
  }, 60_000);

  it("a slow relay's console counts land in the cluster's minute, and it reads them back at its own", async () => {
    const { right, slow } = await nodes();
    const t = Date.now();
    const slowMinute = Math.floor((t - HOUR) / 60_000);
    const rightMinute = Math.floor(t / 60_000);
    await slow.spool.activityStore('slow').add([{ minute: slowMinute, accepted: 3, delivered: 2, deferred: 0, failed: 0, depth: 1 }]);
    await right.spool.activityStore('right').add([{ minute: rightMinute, accepted: 1, delivered: 1, deferred: 0, failed: 0, depth: 2 }]);
    expect(await right.spool.activityStore('right').read(rightMinute - 5)).toEqual([{ minute: rightMinute, accepted: 4, delivered: 3, deferred: 0, failed: 0, depth: 2 }]);
    expect(await slow.spool.activityStore('slow').read(slowMinute - 5)).toEqual([{ minute: slowMinute, accepted: 4, delivered: 3, deferred: 0, failed: 0, depth: 2 }]);
  }, 60_000);
});
