/**
 * One contract, two backends: what "committed", "claimed", "delivered", "held", "failed",
 * recovery and concurrent claims mean, run against the file-system spool and the PostgreSQL spool
 * (a throwaway server started here). A backend that drifts from the other fails here.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { FsSpool } from '../../src/spool/fs/fs-spool.js';
import { migrate } from '../../src/spool/postgres/migrations.js';
import { CHUNK_BYTES, PgSpool } from '../../src/spool/postgres/pg-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { ClaimLimits, NewMessage, Spool } from '../../src/spool/spool.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';

interface Backend {
  name: string;
  /** A spool on fresh storage. */
  fresh(): Promise<Spool>;
  /** Another spool on the same storage as the last fresh() one: a restart after a crash, or a second node. */
  again(): Promise<Spool>;
  /** Whether two spools on one storage share claims (a cluster); a file spool belongs to one process. */
  shared: boolean;
  teardown(): Promise<void>;
}

const opened: Spool[] = [];
async function track(spool: Spool): Promise<Spool> {
  opened.push(spool);
  await spool.recover();
  return spool;
}

function fsBackend(): Backend {
  let dir = '';
  const dirs: string[] = [];
  return {
    name: 'filesystem',
    shared: false,
    async fresh() {
      dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-conf-'));
      dirs.push(dir);
      return track(new FsSpool(dir));
    },
    // The first spool stands for a crashed process: its lock would be stale, so this one does not
    // take it. A dead process files nothing more, so the first spool's background filing is
    // stopped first (close with no grace; it writes nothing new): otherwise it could retire a
    // journal segment while this one adopts it, which no real restart can meet (the lock).
    again: async () => {
      await opened.at(-1)?.close(0);
      return track(new FsSpool(dir, undefined, { lock: false }));
    },
    async teardown() {
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    },
  };
}

let cluster: PgCluster | null = null;
function pgBackend(): Backend {
  let url = '';
  return {
    name: 'postgres',
    shared: true,
    async fresh() {
      cluster ??= await startPgCluster();
      url = await cluster.createDatabase();
      const pool = new pg.Pool({ connectionString: url });
      await migrate(pool);
      await pool.end();
      return track(new PgSpool({ url }));
    },
    again: async () => track(new PgSpool({ url })),
    async teardown() {
      await cluster?.stop();
      cluster = null;
    },
  };
}

const LIMITS: ClaimLimits = { maxInFlightPerMailbox: 4, messagesPerMinute: 0, recipientsPerDay: 0, leaseMs: 30_000 };

function meta(id: string, mailbox = 'relay@x.example', rcpts = 1): NewMessage {
  return {
    id,
    receivedAt: Date.now(),
    envelope: { mailFrom: 'a@x.example', rcptTo: Array.from({ length: rcpts }, (_, i) => `b${i}@x.example`) },
    client: { address: '127.0.0.1', helo: 'h' },
    mailbox,
    messageId: '<m@x>',
  };
}

async function store(spool: Spool, body: string | Buffer = 'Subject: s\r\n\r\nbody\r\n', mailbox?: string, rcpts?: number) {
  const id = newQueueId();
  const writer = await spool.beginMessage(id);
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  // Written in pieces the way intake does (64 KiB stream chunks).
  for (let i = 0; i < bytes.length; i += 65_536) await writer.write(bytes.subarray(i, i + 65_536));
  return writer.commit(meta(id, mailbox, rcpts));
}

const ids = (entries: Array<{ id: string }>) => entries.map((e) => e.id).sort();

describe.each([fsBackend(), pgBackend()])('spool contract: $name', (backend) => {
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close(0).catch(() => undefined)));
  });
  afterAll(() => backend.teardown());
  // The PostgreSQL server is started by the first test of that backend (initdb takes a few seconds).
  beforeAll(() => undefined, 120_000);

  it('committed: a committed message is listed, readable and counted; an aborted one leaves nothing', async () => {
    const spool = await backend.fresh();
    const entry = await store(spool);
    const aborted = await spool.beginMessage(newQueueId());
    await aborted.write(Buffer.from('Subject: never\r\n\r\nx\r\n'));
    await aborted.abort();
    expect(ids(await spool.list('queue'))).toEqual([entry.id]);
    expect(await spool.count('queue')).toBe(1);
    expect((await spool.readMessage(entry.id)).toString()).toBe('Subject: s\r\n\r\nbody\r\n');
    expect(await spool.get(entry.id)).toEqual(entry);
    expect(entry).toMatchObject({ size: 20, attempts: 0, held: false });
  }, 120_000);

  it('committed: a message of several chunks comes back byte for byte, through a stream and a file', async () => {
    const spool = await backend.fresh();
    const body = Buffer.alloc(CHUNK_BYTES * 2 + 12_345);
    for (let i = 0; i < body.length; i += 1) body[i] = (i * 31) % 251;
    const entry = await store(spool, body);
    const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const streamed: Buffer[] = [];
    for await (const piece of spool.openMessage(entry.id)) streamed.push(piece as Buffer);
    expect(digest(Buffer.concat(streamed))).toBe(digest(body));
    expect(await spool.withMessageFile(entry.id, 'queue', async (file) => digest(await readFile(file)))).toBe(digest(body));
    expect(entry.size).toBe(body.length);
  });

  it('recovery: committed messages survive a restart; a message never committed does not appear', async () => {
    const spool = await backend.fresh();
    const kept = await store(spool);
    const half = await spool.beginMessage(newQueueId());
    // The "dead" process's open file is closed after the test, not by the garbage collector (Node warns of that).
    onTestFinished(() => half.abort().catch(() => undefined));
    await half.write(Buffer.alloc(CHUNK_BYTES + 10, 65)); // part of it already stored
    // No commit, no abort, no close: the process "dies" here.
    const restarted = await backend.again();
    expect(ids(await restarted.list('queue'))).toEqual([kept.id]);
    expect((await restarted.readMessage(kept.id)).toString()).toContain('body');
  });

  it('claimed: due messages are leased once, within the per-mailbox in-flight limit; held and future ones are not', async () => {
    const spool = await backend.fresh();
    const stored: Array<{ id: string }> = [];
    for (let i = 0; i < 6; i += 1) stored.push(await store(spool));
    const held = await store(spool);
    await spool.update({ ...held, held: true });
    const later = await store(spool);
    await spool.update({ ...later, nextAttemptAt: Date.now() + 60_000 });
    const first = await spool.claim('node-a', 10, LIMITS);
    expect(first).toHaveLength(4); // maxInFlightPerMailbox
    expect(ids(first.map((l) => l.entry)).every((id) => ids(stored).includes(id))).toBe(true);
    const second = await spool.claim('node-a', 10, LIMITS);
    expect(second).toHaveLength(0); // all four slots taken
    expect(await spool.settle(first[0]!, { kind: 'delivered' })).toBe(true);
    const third = await spool.claim('node-a', 10, LIMITS);
    expect(third).toHaveLength(1);
    expect(first.map((l) => l.entry.id)).not.toContain(third[0]!.entry.id);
  });

  it('delivered: a settled delivery removes the message; a second outcome under the same lease is refused', async () => {
    const spool = await backend.fresh();
    const entry = await store(spool);
    const [lease] = await spool.claim('node-a', 1, LIMITS);
    expect(lease?.entry.id).toBe(entry.id);
    expect(await spool.renew(lease!, 30_000)).toBe(true);
    expect(await spool.settle(lease!, { kind: 'delivered' })).toBe(true);
    expect(await spool.get(entry.id)).toBeNull();
    expect(await spool.count('queue')).toBe(0);
    expect(await spool.settle(lease!, { kind: 'delivered' })).toBe(false);
    expect(await spool.renew(lease!, 30_000)).toBe(false);
  });

  it('deferred and held: a deferred message comes back when due; a held one only after release', async () => {
    const spool = await backend.fresh();
    const entry = await store(spool);
    const [lease] = await spool.claim('node-a', 1, LIMITS);
    const due = Date.now() + 300;
    expect(await spool.settle(lease!, { kind: 'deferred', entry: { ...entry, attempts: 1, nextAttemptAt: due, lastError: { at: Date.now(), kind: 'transient', message: 'HTTP 503' } } })).toBe(true);
    expect(await spool.claim('node-a', 1, LIMITS)).toHaveLength(0);
    expect(await spool.get(entry.id)).toMatchObject({ attempts: 1, nextAttemptAt: due, lastError: { message: 'HTTP 503' } });
    const again = await spool.claim('node-a', 1, LIMITS, due);
    expect(again[0]?.entry).toMatchObject({ id: entry.id, attempts: 1 });
    expect(await spool.settle(again[0]!, { kind: 'deferred', entry: { ...entry, attempts: 2, nextAttemptAt: 0, held: true } })).toBe(true);
    expect(await spool.claim('node-a', 1, LIMITS)).toHaveLength(0);
    await spool.update({ ...entry, attempts: 2, nextAttemptAt: 0, held: false });
    expect(await spool.claim('node-a', 1, LIMITS)).toHaveLength(1);
  });

  it('failed: a failed message leaves the queue for failed, is never claimed, and can be requeued or deleted', async () => {
    const spool = await backend.fresh();
    const entry = await store(spool);
    const [lease] = await spool.claim('node-a', 1, LIMITS);
    const failed = { ...entry, attempts: 1, failedAt: Date.now(), failReason: 'HTTP 400 ErrorInvalidRecipients' };
    expect(await spool.settle(lease!, { kind: 'failed', entry: failed })).toBe(true);
    expect(await spool.list('queue')).toEqual([]);
    expect(await spool.get(entry.id, 'failed')).toMatchObject({ failReason: 'HTTP 400 ErrorInvalidRecipients' });
    expect(await spool.count('failed')).toBe(1);
    expect(await spool.claim('node-a', 1, LIMITS)).toHaveLength(0);
    expect((await spool.withMessageFile(entry.id, 'failed', (f) => readFile(f))).toString()).toContain('body');
    await spool.requeueFailed({ ...entry, nextAttemptAt: 0, requeuedAt: Date.now() });
    expect(await spool.count('failed')).toBe(0);
    const [back] = await spool.claim('node-a', 1, LIMITS);
    expect(back?.entry.id).toBe(entry.id);
    expect(await spool.settle(back!, { kind: 'failed', entry: failed })).toBe(true);
    await spool.deleteFailed(entry.id);
    expect(await spool.count('failed')).toBe(0);
  });

  it('postponed and paused: a Retry-After pause stops claims for that mailbox only, until it has passed', async () => {
    const spool = await backend.fresh();
    const a = await store(spool, undefined, 'a@x.example');
    const b = await store(spool, undefined, 'b@x.example');
    await spool.pauseMailbox('a@x.example', Date.now() + 700);
    const claimed = await spool.claim('node-a', 10, LIMITS);
    expect(ids(claimed.map((l) => l.entry))).toEqual([b.id]);
    const started = Date.now();
    let later: Awaited<ReturnType<Spool['claim']>> = [];
    while (later.length === 0 && Date.now() - started < 5000) {
      await new Promise((r) => setTimeout(r, 50));
      later = await spool.claim('node-a', 10, LIMITS);
    }
    expect(later.map((l) => l.entry.id)).toEqual([a.id]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
  });

  it('pacing: messagesPerMinute and recipientsPerDay count claimed sends; a postponed send gives its reservation back', async () => {
    const spool = await backend.fresh();
    for (let i = 0; i < 4; i += 1) await store(spool, undefined, 'relay@x.example', 2);
    const paced = { ...LIMITS, messagesPerMinute: 2 };
    const first = await spool.claim('node-a', 10, paced);
    expect(first).toHaveLength(2);
    await spool.settle(first[0]!, { kind: 'delivered' });
    expect(await spool.claim('node-a', 10, paced)).toHaveLength(0); // 2 sends in the last minute
    await spool.settle(first[1]!, { kind: 'postponed', untilMs: 0 });
    const refunded = await spool.claim('node-a', 10, paced);
    expect(refunded).toHaveLength(1);
    const perDay = { ...LIMITS, recipientsPerDay: 6 };
    // 2 (delivered) + 2 (in flight) recipients so far today: one more 2-recipient message fits, not two.
    expect(await spool.claim('node-a', 10, perDay)).toHaveLength(1);
  });

  it('concurrent claims: parallel claimers never receive the same message and never exceed the in-flight limit', async () => {
    const spool = await backend.fresh();
    for (let i = 0; i < 12; i += 1) await store(spool, undefined, i % 2 === 0 ? 'a@x.example' : 'b@x.example');
    const claimers = backend.shared ? [spool, await backend.again(), await backend.again()] : [spool, spool, spool];
    const rounds = await Promise.all(claimers.flatMap((s, n) => [s.claim(`node-${n}`, 10, LIMITS), s.claim(`node-${n}`, 10, LIMITS)]));
    const all = rounds.flat().map((l) => l.entry);
    expect(new Set(all.map((e) => e.id)).size).toBe(all.length);
    expect(all.filter((e) => e.mailbox === 'a@x.example')).toHaveLength(4);
    expect(all.filter((e) => e.mailbox === 'b@x.example')).toHaveLength(4);
  });

  it('recovery of claims: a lease that is not renewed lapses and the message is claimed again; the old holder can no longer settle', async () => {
    const spool = await backend.fresh();
    const entry = await store(spool);
    const short = { ...LIMITS, leaseMs: 1500 };
    const [lost] = await spool.claim('node-dead', 1, short);
    expect(lost?.entry.id).toBe(entry.id);
    const other = backend.shared ? await backend.again() : spool;
    expect(await other.claim('node-b', 1, LIMITS)).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 1700));
    const [taken] = await other.claim('node-b', 1, LIMITS);
    expect(taken?.entry.id).toBe(entry.id);
    expect(taken?.token).not.toBe(lost?.token);
    expect(await spool.settle(lost!, { kind: 'delivered' })).toBe(false);
    expect(await spool.get(entry.id)).not.toBeNull();
    expect(await other.settle(taken!, { kind: 'delivered' })).toBe(true);
  });
});

/**
 * Only a shared spool hands a freed slot straight to the mailbox's next message (pg-spool
 * settleAndClaim; the file spool's single node schedules in memory). The limits are the contract's.
 */
describe('slot hand-over on the shared spool', () => {
  const backend = pgBackend();
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close(0).catch(() => undefined)));
  });
  afterAll(() => backend.teardown());

  const handOver = (spool: Spool) => {
    if (!spool.settleAndClaim) throw new Error('the PostgreSQL spool must offer settleAndClaim');
    return spool.settleAndClaim.bind(spool);
  };

  it('passes the slot to the next due message in the same step, never past the in-flight limit; a lost lease hands nothing over', async () => {
    const spool = await backend.fresh();
    const other = await backend.again();
    for (let i = 0; i < 6; i += 1) await store(spool);
    const first = await spool.claim('node-a', 10, LIMITS);
    expect(first).toHaveLength(4);
    const { held, next } = await handOver(spool)(first[0]!, { kind: 'delivered' }, 'node-a', LIMITS);
    expect(held).toBe(true);
    expect(next).toHaveLength(1);
    expect(ids(first.map((l) => l.entry))).not.toContain(next[0]!.entry.id);
    // Still 4 in flight: the other node gets nothing.
    expect(await other.claim('node-b', 10, LIMITS)).toHaveLength(0);
    // The old lease again: refused, and nothing is leased for it.
    expect(await handOver(spool)(first[0]!, { kind: 'delivered' }, 'node-a', LIMITS)).toEqual({ held: false, next: [], standby: [] });
    expect(await other.claim('node-b', 10, LIMITS)).toHaveLength(0);
  });

  it('standby: leased ready for a slot but not counted in flight; promoting it passes the slot, and handing it back frees it', async () => {
    const spool = await backend.fresh();
    const other = await backend.again();
    for (let i = 0; i < 8; i += 1) await store(spool);
    const first = await spool.claim('node-a', 4, LIMITS);
    expect(first).toHaveLength(4);
    // One settles: its slot goes to the next message, and one more is leased on standby.
    const one = await handOver(spool)(first[0]!, { kind: 'delivered' }, 'node-a', LIMITS, Date.now(), { standby: 1 });
    expect(one.next).toHaveLength(1);
    expect(one.standby).toHaveLength(1);
    const spare = one.standby[0]!;
    expect(spare.content?.equals(await spool.readMessage(spare.entry.id))).toBe(true);
    // Standby is not a request in flight, but nobody else may take it, and no fifth slot opens.
    expect(await other.claim('node-b', 10, LIMITS)).toHaveLength(0);
    expect((await other.clusterStats?.())?.inFlightByMailbox.get('relay@x.example')).toBe(4);
    // The next request ends: the standby message takes its slot (its request already started);
    // a new standby is leased, and still 4 are in flight.
    const two = await handOver(spool)(first[1]!, { kind: 'delivered' }, 'node-a', LIMITS, Date.now(), { promote: spare, standby: 1 });
    expect(two.held).toBe(true);
    expect(two.next).toHaveLength(0);
    expect(two.standby).toHaveLength(1);
    expect(two.standby[0]!.entry.id).not.toBe(spare.entry.id);
    expect((await other.clusterStats?.())?.inFlightByMailbox.get('relay@x.example')).toBe(4);
    expect(await other.claim('node-b', 10, LIMITS)).toHaveLength(0);
    // Handed back unsent (the node stops): the message is due again for anyone, not after leaseTimeout.
    expect(await spool.settle(two.standby[0]!, { kind: 'postponed', untilMs: 0 })).toBe(true);
    await spool.settle(first[2]!, { kind: 'delivered' });
    const taken = await other.claim('node-b', 10, LIMITS);
    expect(taken.map((l) => l.entry.id)).toContain(two.standby[0]!.entry.id);
  });

  it('a claim that takes slots takes standby leases with them, flagged, never counted in flight and never another node\'s', async () => {
    const spool = await backend.fresh();
    const other = await backend.again();
    for (let i = 0; i < 10; i += 1) await store(spool);
    const leases = await spool.claim('node-a', 3, LIMITS, Date.now(), 1);
    const slots = leases.filter((l) => l.standby !== true);
    const standby = leases.filter((l) => l.standby === true);
    expect(slots).toHaveLength(3);
    expect(standby).toHaveLength(3); // one per slot taken
    expect(new Set(leases.map((l) => l.entry.id)).size).toBe(6);
    // A small standby message comes with its bytes (read in the same query), a slot's does not.
    for (const spare of standby) expect(spare.content?.equals(await spool.readMessage(spare.entry.id))).toBe(true);
    expect(slots.every((l) => l.content === undefined)).toBe(true);
    // Three in flight: one slot is left for the other node, which takes a standby lease with it.
    expect((await other.clusterStats?.())?.inFlightByMailbox.get('relay@x.example')).toBe(3);
    const theirs = await other.claim('node-b', 10, LIMITS, Date.now(), 1);
    expect(theirs.filter((l) => l.standby !== true)).toHaveLength(1);
    expect(theirs.filter((l) => l.standby === true)).toHaveLength(1);
    expect(theirs.map((l) => l.entry.id).some((id) => leases.some((l) => l.entry.id === id))).toBe(false);
    // Limits full: a claim takes neither slots nor standby.
    expect(await other.claim('node-b', 10, LIMITS, Date.now(), 1)).toEqual([]);
    // Promoting a claimed standby lease passes the slot as any other does.
    const passed = await handOver(spool)(slots[0]!, { kind: 'delivered' }, 'node-a', LIMITS, Date.now(), { promote: standby[0]!, standby: 1 });
    expect(passed.held).toBe(true);
    expect(passed.next).toHaveLength(0);
    expect((await other.clusterStats?.())?.inFlightByMailbox.get('relay@x.example')).toBe(4);
  });

  it('hands nothing over while the mailbox is paused or its minute is full, and wakes the cluster for the free slot instead', async () => {
    const spool = await backend.fresh();
    const other = await backend.again();
    const wakes: string[] = [];
    const unsubscribe = other.subscribe?.((event) => {
      if (event.kind === 'wake') wakes.push(event.mailbox ?? '');
    });
    const waitForWakes = async (count: number) => {
      const started = Date.now();
      while (wakes.length < count && Date.now() - started < 5000) await new Promise((r) => setTimeout(r, 20));
    };
    for (let i = 0; i < 4; i += 1) await store(spool);
    // New mail wakes the cluster too, right after its commit (wake-ups of commits made while one
    // notification is under way travel together in the next).
    await waitForWakes(1);
    expect(wakes.length).toBeGreaterThan(0);
    expect(new Set(wakes)).toEqual(new Set(['relay@x.example']));
    await new Promise((r) => setTimeout(r, 100));
    wakes.length = 0;
    const paced = { ...LIMITS, messagesPerMinute: 2 };
    const [a, b] = await spool.claim('node-a', 10, paced);
    // Two sends this minute: the limit is reached, so no hand-over.
    expect((await handOver(spool)(a!, { kind: 'delivered' }, 'node-a', paced)).next).toEqual([]);
    await spool.pauseMailbox('relay@x.example', Date.now() + 60_000);
    expect((await handOver(spool)(b!, { kind: 'delivered' }, 'node-a', LIMITS)).next).toEqual([]);
    await waitForWakes(2);
    await new Promise((r) => setTimeout(r, 100));
    unsubscribe?.();
    expect(wakes).toEqual(['relay@x.example', 'relay@x.example']);
  });

  it('three nodes handing over and claiming at once: every message leased once, never more than 4 at a time', async () => {
    const spool = await backend.fresh();
    const nodes = [spool, await backend.again(), await backend.again()];
    const total = 40;
    for (let i = 0; i < total; i += 1) await store(spool);
    const delivered: string[] = [];
    let leased = 0;
    let maxLeased = 0;
    const take = (n: number) => {
      leased += n;
      maxLeased = Math.max(maxLeased, leased);
    };
    await Promise.all(
      nodes.map(async (node, n) => {
        const name = `node-${n}`;
        let mine = await node.claim(name, 10, LIMITS);
        take(mine.length);
        for (let idle = 0; idle < 50 && delivered.length < total; ) {
          if (mine.length === 0) {
            idle += 1;
            await new Promise((r) => setTimeout(r, 5));
            mine = await node.claim(name, 10, LIMITS);
            take(mine.length);
            continue;
          }
          const lease = mine.shift()!;
          // The lease is given up (settled) before the database answers with the next: count it out first.
          leased -= 1;
          delivered.push(lease.entry.id);
          const { held, next } = await handOver(node)(lease, { kind: 'delivered' }, name, LIMITS);
          expect(held).toBe(true);
          take(next.length);
          mine.push(...next);
        }
      }),
    );
    expect(delivered).toHaveLength(total);
    expect(new Set(delivered).size).toBe(total);
    expect(maxLeased).toBeLessThanOrEqual(4);
  });
});
