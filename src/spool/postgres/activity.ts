/**
 * The console's per-minute activity in the shared database (relay.activity, migration 3), so every
 * relay's console shows the cluster's counts rather than its own. Each node upserts its own rows
 * (primary key minute + node, so nodes never contend for a row) in batches from a timer, never on
 * the SMTP intake path; a read sums the nodes per minute. A node counts in minutes of its own
 * clock; they are shifted by its measured offset from the database's clock (clock-offset.ts, to
 * the nearest whole minute) on the way in and out, so a node whose clock is off still adds its
 * counts to the cluster's minute and reads the chart at its own "now".
 */
import type pg from 'pg';
import type { ActivityStore, MinuteCounts } from '../spool.js';

/** Kept a little longer than the console's 24-hour window (removed by the spool's maintenance). */
export const ACTIVITY_KEEP = '25 hours';

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>;

export class PgActivityStore implements ActivityStore {
  /** `down`: why the database is known to be away (then nothing waits for a connection: a page view, a stop). */
  constructor(
    private readonly query: Query,
    private readonly node: string,
    private readonly down: () => string | null = () => null,
    private readonly offsetMs: () => number = () => 0,
  ) {}

  /** This node's minutes to the database's (and back, negated). */
  private shift(): number {
    return Math.round(this.offsetMs() / 60_000);
  }

  private assertUp(): void {
    const reason = this.down();
    if (reason !== null) throw new Error(reason);
  }

  async add(counts: readonly MinuteCounts[]): Promise<void> {
    if (counts.length === 0) return;
    this.assertUp();
    // One statement for the whole batch: arrays unnested into rows (at most a day's 1,440 minutes).
    await this.query(
      `INSERT INTO relay.activity AS a (minute, node, accepted, delivered, deferred, failed, depth)
       SELECT to_timestamp(m * 60), $1, ac, de, df, fa, dp
         FROM unnest($2::bigint[], $3::int[], $4::int[], $5::int[], $6::int[], $7::int[]) AS t(m, ac, de, df, fa, dp)
       ON CONFLICT (minute, node) DO UPDATE SET
         accepted = a.accepted + EXCLUDED.accepted,
         delivered = a.delivered + EXCLUDED.delivered,
         deferred = a.deferred + EXCLUDED.deferred,
         failed = a.failed + EXCLUDED.failed,
         depth = greatest(a.depth, EXCLUDED.depth)`,
      [
        this.node,
        counts.map((c) => c.minute + this.shift()),
        counts.map((c) => c.accepted),
        counts.map((c) => c.delivered),
        counts.map((c) => c.deferred),
        counts.map((c) => c.failed),
        counts.map((c) => c.depth),
      ],
    );
  }

  async read(sinceMinute: number): Promise<MinuteCounts[]> {
    this.assertUp();
    const { rows } = await this.query<{ m: string; accepted: string; delivered: string; deferred: string; failed: string; depth: number | null }>(
      `SELECT (extract(epoch FROM minute) / 60)::bigint AS m, sum(accepted) AS accepted, sum(delivered) AS delivered,
              sum(deferred) AS deferred, sum(failed) AS failed, max(depth) AS depth
         FROM relay.activity WHERE minute >= to_timestamp($1::bigint * 60) GROUP BY minute ORDER BY minute`,
      [sinceMinute + this.shift()],
    );
    const shift = this.shift();
    return rows.map((r) => ({
      minute: Number(r.m) - shift,
      accepted: Number(r.accepted),
      delivered: Number(r.delivered),
      deferred: Number(r.deferred),
      failed: Number(r.failed),
      depth: r.depth === null ? null : Number(r.depth),
    }));
  }
}
