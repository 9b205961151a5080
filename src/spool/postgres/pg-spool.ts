/**
 * The shared queue in PostgreSQL: every relay of a cluster accepts into it and delivers from it.
 *
 * - 250 means committed: the message's last chunk, its envelope and its 'queued' state go in one
 *   statement (one implicit transaction) before intake answers; anything else answers 451.
 * - Bytes travel in chunks of CHUNK_BYTES both ways (relay.chunks), so a 60 MB message never sits
 *   in memory whole. Chunks of a message still arriving sit under a 'receiving' row that nothing
 *   delivers; rows left 'receiving' by a crash are swept after STALE_RECEIVING_MS.
 * - Claims are leases: due rows locked FOR UPDATE SKIP LOCKED under the mailbox's row lock, which
 *   serialises claimers of one mailbox cluster-wide, so in-flight slots and the sends of the last
 *   minute and day (relay.sends) are counted exactly. Every time in the queue is the database's:
 *   leases and windows use now() in SQL, and the times a relay decides (a retry, a Retry-After
 *   pause) are converted with its measured clock offset on the way in and out (clock-offset.ts).
 * - Outcomes are fenced by the lease token: a node whose lease lapsed and was taken over writes
 *   nothing (at-least-once, like a crash).
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { noteBytesMoved } from '../../memory/buffer-turnover.js';
import type { SpoolEntry } from '../entry.js';
import type { ActivityStore, ClaimLimits, DraftStore, HandOver, Lease, MessageWriter, NewMessage, RecoveryReport, Settlement, Spool, SpoolEvent } from '../spool.js';
import { SpoolBusyError, STANDBY_READ_AHEAD_BYTES } from '../spool.js';
import { ACTIVITY_KEEP, PgActivityStore } from './activity.js';
import { NOTABLE_SKEW_MS, offsetFromSamples, shiftEntryTimes, shiftTime, type ClockSample } from './clock-offset.js';
import { PgDraftStore } from './draft-store.js';
import { NotificationListener, CHANNEL } from './listener.js';
import { createPool, DatabaseHealth } from './pg-connection.js';

/**
 * 256 KiB: a 60 MB message is 240 rows, and what one chunk costs in flight (the Bind message's copy
 * on the way in, the protocol buffer on the way out) stays small next to the 200 MB RSS budget
 * (1 MiB chunks measured 203 MB peak RSS for a 60 MB message, against 176 MB on the file spool).
 */
export const CHUNK_BYTES = 256 * 1024;
/** A 'receiving' row older than this is an intake that died before its commit (sessions last at most 10 min by default). */
const STALE_RECEIVING_MS = 3_600_000;
/** Sends rows are kept a little longer than the 24-hour recipients window. */
const SENDS_KEEP = "25 hours";
const MAINTENANCE_MS = 60_000;

export interface PgSpoolOptions {
  url: string;
  /** Where the large-message path gets its temporary copy (default: the OS temp directory). */
  tempDir?: string;
  poolSize?: number;
  /** Background problems (a failed sweep, the database going away and coming back). */
  onError?: (event: string, err: Error) => void;
  onAvailability?: (down: string | null) => void;
  /** Something an operator should know that needs no retry (this relay's clock far from the database's). */
  onNotice?: (event: string, fields: Record<string, unknown>) => void;
  /** This relay's clock (the one its scheduler passes as `now`); measured against the database's. */
  now?: () => number;
}

type Row = { entry: SpoolEntry; held: boolean; run_at: string };

/**
 * Wraps a call of a leasing function (relay.claim_for, relay.settle_and_claim): each small standby
 * lease's message comes back in the same round trip, instead of a read of its own afterwards (one
 * query per delivered message fewer on a busy mailbox). Rows keep the function's order.
 */
function withReadAhead(call: string, columns: string): string {
  return `SELECT ${columns}, CASE WHEN r.standby AND (r.entry->>'size')::bigint <= ${STANDBY_READ_AHEAD_BYTES}
            THEN (SELECT string_agg(c.data, ''::bytea ORDER BY c.seq) FROM relay.chunks c WHERE c.message_id = r.entry->>'id') END AS content
          FROM ${call} WITH ORDINALITY AS r ORDER BY r.ordinality`;
}

/** Clock readings per measurement: the shortest round trip of three is the one used. */
const CLOCK_SAMPLES = 3;
/** A measurement less certain than this (half its shortest round trip) does not replace a known offset. */
const MAX_CLOCK_UNCERTAINTY_MS = 100;

export class PgSpool implements Spool {
  readonly pool: pg.Pool;
  readonly health: DatabaseHealth;
  private readonly listener: NotificationListener;
  private readonly subscribers = new Set<(event: SpoolEvent) => void>();
  private maintenance: NodeJS.Timeout | null = null;
  private readonly onError: (event: string, err: Error) => void;
  private readonly now: () => number;
  /** Database time minus this relay's (clock-offset.ts); null until first measured. */
  private offsetMs: number | null = null;
  private skewNoticed = false;
  /** Mailboxes with newly committed mail whose wake-up has not gone out yet (wakeCluster). */
  private readonly toWake = new Set<string>();
  private waking: Promise<void> | null = null;

  constructor(private readonly options: PgSpoolOptions) {
    this.onError = options.onError ?? (() => undefined);
    this.now = options.now ?? Date.now;
    this.pool = createPool(options.url, (err) => this.onError('spool.pg_idle_client_error', err), options.poolSize);
    this.health = new DatabaseHealth(this.pool, (down) => options.onAvailability?.(down));
    this.listener = new NotificationListener(
      options.url,
      (payload) => this.dispatch(payload),
      () => this.emit({ kind: 'heard' }),
    );
  }

  /** Every database call goes through here, so availability is tracked from real traffic too. */
  private async q<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      const result = await this.pool.query<R>(text, values);
      if (this.health.down !== null) this.health.up();
      return result;
    } catch (err) {
      this.health.observe(err);
      throw err;
    }
  }

  private async tx<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      this.health.observe(err);
      throw err;
    }
    // A checked-out client has lost the pool's error listener: without one a socket error crashes the process.
    const onClientError = (err: Error) => this.health.observe(err);
    client.on('error', onClientError);
    let failure: unknown = null;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      failure = err;
      this.health.observe(err);
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.off('error', onClientError);
      // A failed client is destroyed rather than reused (a timed-out query may still run on it: node-postgres #3399).
      client.release(failure instanceof Error ? failure : undefined);
    }
  }

  /**
   * Tells the other relays about newly committed mail, after its commit and one notification at a
   * time. A NOTIFY inside the intake transaction serialised intake: PostgreSQL takes a
   * database-wide lock for it at commit and holds it through the WAL flush, so concurrent commits
   * could not share a flush (measured on this machine, 8 clients each committing a 10 KB row:
   * 4,070-4,880 rows/s without, 2,094-2,174 with; pg-queues.md: River moved to a NOTIFY sent by the
   * application for the same reason). Here the wake-ups of everything committed while one
   * notification is under way go out together in the next. A crash between a commit and its
   * wake-up costs the other relays at most their one-second poll; this relay's own claim loop is
   * woken directly by intake.
   */
  private wakeCluster(mailbox: string): void {
    this.toWake.add(mailbox);
    if (this.waking) return;
    this.waking = (async () => {
      try {
        while (this.toWake.size > 0) {
          const mailboxes = [...this.toWake];
          this.toWake.clear();
          await this.q(`SELECT pg_notify('${CHANNEL}', 'wake ' || m) FROM unnest($1::text[]) AS m`, [mailboxes]);
        }
      } catch {
        this.toWake.clear(); // the database is away: health says so, the poll finds the mail
      } finally {
        // In the same turn as the last look at toWake: a mailbox added after it starts a new round.
        this.waking = null;
      }
    })();
  }

  private dispatch(payload: string): void {
    // Payloads: "wake <mailbox>" (new mail or a free slot), "pause <untilMs> <mailbox>" (a Retry-After).
    const [kind, ...rest] = payload.split(' ');
    if (kind === 'pause') {
      const untilMs = this.fromDb(Number(rest[0]));
      this.emit({ kind: 'pause', mailbox: rest.slice(1).join(' '), untilMs });
    } else {
      this.emit({ kind: 'wake', mailbox: rest.join(' ') || null });
    }
  }

  private emit(event: SpoolEvent): void {
    for (const s of this.subscribers) s(event);
  }

  subscribe(handler: (event: SpoolEvent) => void): () => void {
    this.subscribers.add(handler);
    return () => this.subscribers.delete(handler);
  }

  hearsOthersNow(): boolean {
    return this.listener.hearing;
  }

  /** Database time minus this relay's, 0 until measured. */
  private get offset(): number {
    return this.offsetMs ?? 0;
  }

  /** A time of this relay's clock as the database's, and back (0, "no time", stays 0). */
  private toDb(ms: number): number {
    return shiftTime(ms, this.offset);
  }

  private fromDb(ms: number): number {
    return shiftTime(ms, -this.offset);
  }

  private toEntry(row: Row): SpoolEntry {
    return { ...shiftEntryTimes(row.entry, -this.offset), held: row.held, nextAttemptAt: this.fromDb(Number(row.run_at)) };
  }

  /** The entry as stored: its times on the database's clock (toEntry reads them back on this relay's). */
  private stored(entry: SpoolEntry): string {
    return JSON.stringify(shiftEntryTimes(entry, this.offset));
  }

  /**
   * Measures this relay's clock against the database's (at start, every maintenance round, and
   * before an operator command of a process that did not start the spool). Clocks drift and NTP
   * steps them, so it is measured again rather than once.
   */
  async measureClock(): Promise<number> {
    // On one connection of its own, timed around the query alone: a wait for a free connection of
    // the pool (shared with intake and claims) comes before the database reads its clock and would
    // break the halfway assumption.
    const samples = await this.tx(async (client) => {
      const taken: ClockSample[] = [];
      for (let i = 0; i < CLOCK_SAMPLES; i++) {
        const sentAt = this.now();
        const { rows } = await client.query<{ ms: string }>(`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8::text AS ms`);
        taken.push({ sentAt, receivedAt: this.now(), databaseMs: Number(rows[0]?.ms) });
      }
      return taken;
    });
    const { offsetMs, uncertaintyMs } = offsetFromSamples(samples);
    // A busy moment (every round trip long) measures nothing better than what is known: kept.
    if (this.offsetMs !== null && uncertaintyMs > MAX_CLOCK_UNCERTAINTY_MS) return this.offsetMs;
    this.offsetMs = offsetMs;
    const notable = Math.abs(offsetMs) > NOTABLE_SKEW_MS;
    if (notable && !this.skewNoticed) this.options.onNotice?.('spool.clock_skew', { offsetMs, uncertaintyMs });
    this.skewNoticed = notable;
    return offsetMs;
  }

  private async knowClock(): Promise<void> {
    if (this.offsetMs === null) await this.measureClock();
  }

  async recover(): Promise<RecoveryReport> {
    this.listener.start();
    await this.measureClock();
    const discarded = await this.sweep();
    this.maintenance = setInterval(() => void this.maintain().catch((err: Error) => this.onError('spool.pg_maintenance_failed', err)), MAINTENANCE_MS);
    this.maintenance.unref();
    // Nothing to hand to a local scheduler: every node claims from the shared queue.
    return { queued: [], discardedPartial: discarded, quarantined: [], completedMoves: 0, replayed: 0 };
  }

  private async maintain(): Promise<void> {
    await this.measureClock();
    await this.sweep();
  }

  /** Removes intakes that died before their commit, and sends and console activity older than the day window. */
  private async sweep(): Promise<number> {
    const { rowCount } = await this.q(`DELETE FROM relay.messages WHERE state = 'receiving' AND created_at < now() - $1 * interval '1 millisecond'`, [STALE_RECEIVING_MS]);
    await this.q(`DELETE FROM relay.sends WHERE at < now() - interval '${SENDS_KEEP}'`);
    await this.q(`DELETE FROM relay.activity WHERE minute < now() - interval '${ACTIVITY_KEEP}'`);
    return rowCount ?? 0;
  }

  /** The console's per-minute counts, shared by the cluster (activity.ts). */
  activityStore(node: string): ActivityStore {
    return new PgActivityStore((text, values) => this.q(text, values), node, () => this.health.down, () => this.offset);
  }

  /** The cluster's drafts (draft-store.ts): held by this node, taken over from nodes that stopped. */
  draftStore(node: string, leaseMs: number, maxInFlightPerMailbox: () => number): DraftStore {
    return new PgDraftStore((text, values) => this.q(text, values), node, leaseMs, maxInFlightPerMailbox);
  }

  async beginMessage(id: string): Promise<MessageWriter> {
    // Known down: answer 451 now rather than after the sender has sent the whole message.
    if (this.health.down !== null) throw new Error(this.health.down);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let size = 0;
    let seq = 0;
    let started = false;
    const flush = async (data: Buffer) => {
      if (!started) {
        await this.q(
          `WITH m AS (INSERT INTO relay.messages (id, state) VALUES ($1, 'receiving'))
           INSERT INTO relay.chunks (message_id, seq, data) VALUES ($1, $2, $3)`,
          [id, seq, data],
        );
        started = true;
      } else {
        await this.q('INSERT INTO relay.chunks (message_id, seq, data) VALUES ($1, $2, $3)', [id, seq, data]);
      }
      seq += 1;
    };
    const takeChunk = () => {
      const all = Buffer.concat(pending, pendingBytes);
      const chunk = all.subarray(0, CHUNK_BYTES);
      const rest = all.subarray(CHUNK_BYTES);
      pending = rest.length > 0 ? [Buffer.from(rest)] : [];
      pendingBytes = rest.length;
      return chunk;
    };
    return {
      id,
      write: async (chunk: Buffer) => {
        pending.push(chunk);
        pendingBytes += chunk.length;
        size += chunk.length;
        while (pendingBytes >= CHUNK_BYTES) await flush(takeChunk());
      },
      commit: async (meta: NewMessage) => {
        const entry: SpoolEntry = { version: 1, ...meta, id, size, attempts: 0, nextAttemptAt: meta.receivedAt, held: false };
        const last = Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        const values = [id, this.stored(entry), entry.mailbox, this.toDb(entry.nextAttemptAt), size, entry.envelope.rcptTo.length];
        // One statement is one transaction: the message is queued and its mailbox known together,
        // or not at all. The cluster is woken right after (wakeCluster).
        const tail = `mb AS (INSERT INTO relay.mailboxes (mailbox) VALUES ($3) ON CONFLICT (mailbox) DO NOTHING)
           SELECT 1`;
        if (!started) {
          await this.q(
            `WITH m AS (INSERT INTO relay.messages (id, state, entry, mailbox, run_at, size, rcpts) VALUES ($1, 'queued', $2, $3, $4, $5, $6)),
             c AS (INSERT INTO relay.chunks (message_id, seq, data) VALUES ($1, 0, $7)), ${tail}`,
            [...values, last],
          );
        } else {
          await this.q(
            `WITH m AS (UPDATE relay.messages SET state = 'queued', entry = $2, mailbox = $3, run_at = $4, size = $5, rcpts = $6 WHERE id = $1 AND state = 'receiving' RETURNING id),
             c AS (INSERT INTO relay.chunks (message_id, seq, data) SELECT $1, $7::int, $8::bytea FROM m WHERE length($8::bytea) > 0), ${tail} FROM m`,
            [...values, seq, last],
          ).then((r) => {
            if (r.rowCount !== 1) throw new Error(`message ${id} was swept while it was being received`);
          });
        }
        this.wakeCluster(entry.mailbox);
        return entry;
      },
      abort: async () => {
        pending = [];
        if (started) await this.q(`DELETE FROM relay.messages WHERE id = $1 AND state = 'receiving'`, [id]).catch(() => undefined);
      },
    };
  }

  /**
   * Stores a message moved from another spool with its state (attempts, last error, failed) kept.
   * Idempotent: false when the message is already in the database; a half-done earlier import of
   * the same message (still 'receiving') is replaced.
   */
  async importMessage(entry: SpoolEntry, where: 'queue' | 'failed', body: AsyncIterable<Buffer>): Promise<boolean> {
    await this.knowClock();
    const { rows } = await this.q<{ state: string }>('SELECT state FROM relay.messages WHERE id = $1', [entry.id]);
    if (rows[0] && rows[0].state !== 'receiving') return false;
    if (rows[0]) await this.q(`DELETE FROM relay.messages WHERE id = $1 AND state = 'receiving'`, [entry.id]);
    const writer = await this.beginMessage(entry.id);
    for await (const piece of body) await writer.write(piece);
    await writer.commit(entry);
    await this.q(`UPDATE relay.messages SET state = $2, entry = $3, held = $4, run_at = $5 WHERE id = $1`, [
      entry.id,
      where === 'queue' ? 'queued' : 'failed',
      this.stored(entry),
      entry.held,
      this.toDb(entry.nextAttemptAt),
    ]);
    return true;
  }

  private async chunkSeqs(id: string): Promise<number[]> {
    const { rows } = await this.q<{ seq: number }>('SELECT seq FROM relay.chunks WHERE message_id = $1 ORDER BY seq', [id]);
    if (rows.length === 0) throw new Error(`message ${id} has no stored content`);
    return rows.map((r) => r.seq);
  }

  /** The message's chunks one at a time (never the whole message in memory). */
  private async *chunks(id: string): AsyncGenerator<Buffer> {
    for (const seq of await this.chunkSeqs(id)) {
      // bytea comes back hex-encoded (node-postgres has no binary result mode for it): one chunk at a time.
      const { rows } = await this.q<{ data: Buffer }>('SELECT data FROM relay.chunks WHERE message_id = $1 AND seq = $2', [id, seq]);
      const data = rows[0]?.data;
      if (!data) throw new Error(`message ${id} lost chunk ${seq} while being read (deleted?)`);
      noteBytesMoved(data.length * 3); // the hex text, its protocol buffer and the decoded copy
      yield data;
    }
  }

  /**
   * The whole message, for a delivery in one request (at most ~3 MB, large-message.ts): its chunks
   * in one query, one round trip on the path between one request to Graph and the next.
   */
  async readMessage(id: string): Promise<Buffer> {
    const { rows } = await this.q<{ data: Buffer }>('SELECT data FROM relay.chunks WHERE message_id = $1 ORDER BY seq', [id]);
    if (rows.length === 0) throw new Error(`message ${id} has no stored content`);
    return rows.length === 1 ? (rows[0] as { data: Buffer }).data : Buffer.concat(rows.map((r) => r.data));
  }

  openMessage(id: string): Readable {
    return Readable.from(this.chunks(id));
  }

  async withMessageFile<T>(id: string, _where: 'queue' | 'failed', use: (file: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(path.join(this.options.tempDir ?? os.tmpdir(), 'sgr-msg-'));
    try {
      const file = path.join(dir, `${id}.eml`);
      await pipeline(Readable.from(this.chunks(id)), createWriteStream(file, { mode: 0o600 }));
      return await use(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async get(id: string, where: 'queue' | 'failed' = 'queue'): Promise<SpoolEntry | null> {
    const { rows } = await this.q<Row>('SELECT entry, held, run_at FROM relay.messages WHERE id = $1 AND state = $2', [id, where === 'queue' ? 'queued' : 'failed']);
    return rows[0] ? this.toEntry(rows[0]) : null;
  }

  async list(where: 'queue' | 'failed'): Promise<SpoolEntry[]> {
    const { rows } = await this.q<Row>('SELECT entry, held, run_at FROM relay.messages WHERE state = $1 ORDER BY id', [where === 'queue' ? 'queued' : 'failed']);
    return rows.map((row) => this.toEntry(row));
  }

  async count(where: 'queue' | 'failed'): Promise<number> {
    const { rows } = await this.q<{ n: string }>('SELECT count(*) AS n FROM relay.messages WHERE state = $1', [where === 'queue' ? 'queued' : 'failed']);
    return Number(rows[0]?.n ?? 0);
  }

  /** Queue depth, oldest message, held and in-flight leases per mailbox: the cluster's, for /metrics. */
  async clusterStats(): Promise<{ depth: number; oldestReceivedAt: number | null; held: number; inFlightByMailbox: Map<string, number> }> {
    const { rows } = await this.q<{ depth: string; held: string; oldest: string | null }>(
      `SELECT count(*) AS depth, count(*) FILTER (WHERE held) AS held, min((entry->>'receivedAt')::bigint) AS oldest FROM relay.messages WHERE state = 'queued'`,
    );
    const leased = await this.q<{ mailbox: string; n: string }>(`SELECT mailbox, count(*) AS n FROM relay.messages WHERE lease_token IS NOT NULL AND lease_until >= now() AND NOT standby GROUP BY mailbox`);
    const row = rows[0];
    return {
      depth: Number(row?.depth ?? 0),
      held: Number(row?.held ?? 0),
      oldestReceivedAt: row?.oldest == null ? null : this.fromDb(Number(row.oldest)),
      inFlightByMailbox: new Map(leased.rows.map((r) => [r.mailbox, Number(r.n)])),
    };
  }

  /** Operator changes: refused while another node's lease on the message is alive (its outcome comes next). */
  private async changeUnleased(id: string, sql: string, values: unknown[]): Promise<void> {
    const { rowCount } = await this.q(`${sql} AND (lease_token IS NULL OR lease_until < now())`, values);
    if (rowCount === 0) {
      const { rows } = await this.q<{ leased: boolean }>(`SELECT lease_token IS NOT NULL AND lease_until >= now() AS leased FROM relay.messages WHERE id = $1`, [id]);
      if (rows[0]?.leased) throw new SpoolBusyError(`message ${id} is being delivered right now by a relay of the cluster; try again in a moment`);
    }
  }

  async update(entry: SpoolEntry): Promise<void> {
    await this.knowClock();
    await this.changeUnleased(
      entry.id,
      `UPDATE relay.messages SET entry = $2, held = $3, run_at = $4, lease_owner = NULL, lease_token = NULL, lease_until = NULL WHERE id = $1 AND state = 'queued'`,
      [entry.id, this.stored(entry), entry.held, this.toDb(entry.nextAttemptAt)],
    );
    if (!entry.held) await this.q(`SELECT pg_notify('${CHANNEL}', $1)`, [`wake ${entry.mailbox}`]);
  }

  async remove(id: string): Promise<void> {
    await this.changeUnleased(id, `DELETE FROM relay.messages WHERE id = $1 AND state = 'queued'`, [id]);
  }

  async moveToFailed(entry: SpoolEntry): Promise<void> {
    await this.changeUnleased(
      entry.id,
      `UPDATE relay.messages SET state = 'failed', entry = $2, lease_owner = NULL, lease_token = NULL, lease_until = NULL WHERE id = $1 AND state = 'queued'`,
      [entry.id, this.stored(entry)],
    );
  }

  async requeueFailed(entry: SpoolEntry): Promise<void> {
    await this.knowClock();
    await this.q(
      `WITH m AS (UPDATE relay.messages SET state = 'queued', entry = $2, held = $3, run_at = $4 WHERE id = $1 AND state = 'failed'),
       mb AS (INSERT INTO relay.mailboxes (mailbox) VALUES ($5) ON CONFLICT (mailbox) DO NOTHING)
       SELECT pg_notify('${CHANNEL}', $6)`,
      [entry.id, this.stored(entry), entry.held, this.toDb(entry.nextAttemptAt), entry.mailbox, `wake ${entry.mailbox}`],
    );
  }

  async deleteFailed(id: string): Promise<void> {
    await this.q(`DELETE FROM relay.messages WHERE id = $1 AND state = 'failed'`, [id]);
  }

  async probeWritable(): Promise<void> {
    if (this.health.down !== null) throw new Error(this.health.down);
    const { rows } = await this.q<{ ro: boolean }>('SELECT pg_is_in_recovery() AS ro');
    if (rows[0]?.ro) throw new Error('the database is a read-only standby (failover in progress?)');
  }

  async claim(node: string, max: number, limits: ClaimLimits, localNow = this.now(), standbyPerSlot = 0): Promise<Lease[]> {
    if (max <= 0) return [];
    const now = this.toDb(localNow);
    return this.tx(async (client) => {
      // Mailboxes with due mail, not paused; their rows are locked so no other node claims for them
      // until this transaction ends (SKIP LOCKED: a busy mailbox is left to the node holding it).
      const { rows: boxes } = await client.query<{ mailbox: string }>(
        `SELECT b.mailbox FROM relay.mailboxes b
          WHERE coalesce(b.paused_until, '-infinity') <= now()
            AND EXISTS (SELECT 1 FROM relay.messages q WHERE q.mailbox = b.mailbox AND q.state = 'queued' AND NOT q.held AND q.run_at <= $1
                        AND (q.lease_token IS NULL OR q.lease_until < now()))
          ORDER BY b.last_claim_at NULLS FIRST LIMIT 20 FOR UPDATE OF b SKIP LOCKED`,
        [now],
      );
      const leases: Lease[] = [];
      const standby: Lease[] = [];
      for (const { mailbox } of boxes) {
        if (leases.length >= max) break;
        const slots = await this.claimFor(client, mailbox, node, max - leases.length, limits, now);
        leases.push(...slots);
        // The mailbox row is still locked: its standby leases come from the same snapshot of limits.
        if (slots.length > 0 && standbyPerSlot > 0) standby.push(...(await this.claimFor(client, mailbox, node, 0, limits, now, slots.length * standbyPerSlot)));
      }
      leases.sort((a, b) => a.entry.nextAttemptAt - b.entry.nextAttemptAt || (a.entry.id < b.entry.id ? -1 : 1));
      return [...leases, ...standby];
    });
  }

  /**
   * Leases up to `max` due messages of one mailbox whose row the transaction has locked (relay.claim_for,
   * migration 2); with `standby`, that many on standby for a node that holds a slot of the mailbox.
   */
  private async claimFor(client: pg.PoolClient, mailbox: string, node: string, max: number, limits: ClaimLimits, now: number, standby = 0): Promise<Lease[]> {
    const { rows } = await client.query<Row & { lease_token: string; standby: boolean; content: Buffer | null }>(withReadAhead('relay.claim_for($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)', 'r.entry, r.held, r.run_at, r.lease_token, r.standby'), [
      mailbox,
      node,
      max,
      limits.maxInFlightPerMailbox,
      limits.messagesPerMinute,
      limits.recipientsPerDay,
      limits.leaseMs,
      now,
      standby,
      standby > 0,
    ]);
    return rows.map((row) => ({ entry: this.toEntry(row), token: row.lease_token, ...(row.standby ? { standby: true as const } : {}), ...(row.content ? { content: row.content } : {}) }));
  }

  async renew(lease: Lease, leaseMs: number, sending = false): Promise<boolean> {
    const { rowCount } = await this.q(
      `UPDATE relay.messages SET lease_until = now() + $3 * interval '1 millisecond', standby = standby AND NOT $4 WHERE id = $1 AND lease_token = $2 AND state = 'queued'`,
      [lease.entry.id, lease.token, leaseMs, sending],
    );
    return rowCount === 1;
  }

  async settle(lease: Lease, outcome: Settlement): Promise<boolean> {
    return (await this.settleWith(lease, outcome, null)).held;
  }

  /**
   * The outcome, and in the same step the mailbox's next due message leased to `node`: the freed
   * slot passes straight to it. Settled and re-claimed apart, the slot sat empty for a notification
   * and a claim (and a claim that met another node's lock on the mailbox skipped it until the next
   * wake): three relays filled 0.755x of Graph's 40 msg/s for one mailbox (bench figure 8, session
   * 4). Nothing is leased while the mailbox is paused or its windows are full; then the free slot
   * is announced to the cluster as before. One round trip (relay.settle_and_claim, migration 2).
   */
  async settleAndClaim(lease: Lease, outcome: Settlement, node: string, limits: ClaimLimits, now = this.now(), handOver: HandOver = {}): Promise<{ held: boolean; next: Lease[]; standby: Lease[] }> {
    return this.settleWith(lease, outcome, { node, limits, now, handOver });
  }

  private async settleWith(
    lease: Lease,
    outcome: Settlement,
    claim: { node: string; limits: ClaimLimits; now: number; handOver: HandOver } | null,
  ): Promise<{ held: boolean; next: Lease[]; standby: Lease[] }> {
    const e = outcome.kind === 'deferred' || outcome.kind === 'failed' ? outcome.entry : null;
    const runAt = this.toDb(outcome.kind === 'postponed' ? outcome.untilMs : (e?.nextAttemptAt ?? 0));
    const limits = claim?.limits;
    const { rows } = await this.q<{ settled: boolean | null; entry: SpoolEntry | null; held: boolean | null; run_at: string | null; lease_token: string | null; standby: boolean | null; content: Buffer | null }>(
      withReadAhead('relay.settle_and_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)', 'r.settled, r.entry, r.held, r.run_at, r.lease_token, r.standby'),
      [
        lease.entry.id,
        lease.token,
        outcome.kind,
        e ? this.stored(e) : null,
        e?.held ?? false,
        runAt,
        claim !== null,
        claim?.node ?? '',
        limits?.maxInFlightPerMailbox ?? 0,
        limits?.messagesPerMinute ?? 0,
        limits?.recipientsPerDay ?? 0,
        limits?.leaseMs ?? 0,
        this.toDb(claim?.now ?? 0),
        CHANNEL,
        claim?.handOver.promote?.token ?? null,
        claim?.handOver.standby ?? 0,
      ],
    );
    const [first, ...leased] = rows;
    const toLease = (row: (typeof rows)[number]): Lease => ({ entry: this.toEntry(row as Row), token: row.lease_token as string, ...(row.content ? { content: row.content } : {}) });
    return { held: first?.settled === true, next: leased.filter((r) => r.standby !== true).map(toLease), standby: leased.filter((r) => r.standby === true).map(toLease) };
  }

  async mailboxPausedUntil(mailbox: string): Promise<number> {
    const { rows } = await this.q<{ until: string | null }>(`SELECT (extract(epoch FROM paused_until) * 1000)::bigint::text AS until FROM relay.mailboxes WHERE mailbox = $1 AND paused_until > now()`, [mailbox]);
    return rows[0]?.until ? this.fromDb(Number(rows[0].until)) : 0;
  }

  async pauseMailbox(mailbox: string, localUntilMs: number): Promise<void> {
    const untilMs = this.toDb(localUntilMs);
    await this.q(
      `WITH p AS (INSERT INTO relay.mailboxes (mailbox, paused_until) VALUES ($1, to_timestamp($2 / 1000.0))
                  ON CONFLICT (mailbox) DO UPDATE SET paused_until = greatest(coalesce(relay.mailboxes.paused_until, '-infinity'), EXCLUDED.paused_until))
       SELECT pg_notify('${CHANNEL}', $3)`,
      [mailbox, untilMs, `pause ${untilMs} ${mailbox}`],
    );
  }

  async close(): Promise<void> {
    if (this.maintenance) clearInterval(this.maintenance);
    await this.waking;
    this.health.close();
    await this.listener.stop();
    await this.pool.end().catch(() => undefined);
  }
}

