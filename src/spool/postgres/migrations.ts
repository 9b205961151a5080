/**
 * Versioned schema migrations for the shared queue, applied at start and by `db migrate`.
 * One transaction under a transaction-level advisory lock (pg_advisory_xact_lock, safe behind a
 * transaction-pooling PgBouncer, unlike a session lock: pg-queues.md §2), so several nodes starting
 * at once apply each step exactly once; the others wait, then find nothing to do. A database at a
 * newer version than this code knows is refused rather than written to.
 */
import type pg from 'pg';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'queue, chunks, mailbox limits',
    sql: `
CREATE TABLE relay.messages (
  id text PRIMARY KEY,
  -- receiving: chunks arriving, not acknowledged (swept when stale); queued; failed. Delivered = deleted.
  state text NOT NULL CHECK (state IN ('receiving', 'queued', 'failed')),
  held boolean NOT NULL DEFAULT false,
  mailbox text NOT NULL DEFAULT '',
  -- The entry's nextAttemptAt (ms since the epoch), and the whole SpoolEntry as the record.
  run_at bigint NOT NULL DEFAULT 0,
  entry jsonb,
  size bigint NOT NULL DEFAULT 0,
  rcpts int NOT NULL DEFAULT 1,
  lease_owner text,
  lease_token uuid,
  lease_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_due ON relay.messages (mailbox, run_at, id) WHERE state = 'queued' AND NOT held;
CREATE INDEX messages_leased ON relay.messages (mailbox, lease_until) WHERE lease_token IS NOT NULL;
CREATE INDEX messages_receiving ON relay.messages (created_at) WHERE state = 'receiving';
CREATE TABLE relay.chunks (
  message_id text NOT NULL REFERENCES relay.messages (id) ON DELETE CASCADE,
  seq int NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (message_id, seq)
);
CREATE TABLE relay.mailboxes (
  mailbox text PRIMARY KEY,
  paused_until timestamptz,
  last_claim_at timestamptz
);
-- One row per request let out (a reservation made at claim time, returned if nothing was sent):
-- true sliding windows for messagesPerMinute and recipientsPerDay across the cluster.
CREATE TABLE relay.sends (
  mailbox text NOT NULL,
  at timestamptz NOT NULL,
  rcpts int NOT NULL,
  lease_token uuid
);
CREATE INDEX sends_window ON relay.sends (mailbox, at);
CREATE INDEX sends_token ON relay.sends (lease_token);
`,
  },
  {
    version: 2,
    name: 'per-minute activity for the console',
    sql: `
-- Each node adds its own per-minute counts (activity.ts, every few seconds); the console shows the
-- sum over nodes. Rows older than 25 hours are removed by the spool's maintenance.
CREATE TABLE relay.activity (
  minute timestamptz NOT NULL,
  node text NOT NULL,
  accepted int NOT NULL DEFAULT 0,
  delivered int NOT NULL DEFAULT 0,
  deferred int NOT NULL DEFAULT 0,
  failed int NOT NULL DEFAULT 0,
  -- The highest (cluster-wide) queue depth this node sampled in the minute.
  depth int,
  PRIMARY KEY (minute, node)
);
`,
  },
];

export const LATEST_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

export class SchemaTooNewError extends Error {}

/** Applies the pending migrations; returns the versions before and after and what was applied. */
export async function migrate(pool: pg.Pool, lockTimeoutMs = 60_000): Promise<{ from: number; to: number; applied: number[] }> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(lockTimeoutMs))}`);
    // The key is scoped to this database, so two relays' databases on one server do not wait for each other.
    await client.query("SELECT pg_advisory_xact_lock(hashtextextended('smtp-graph-relay:migrate:' || current_database(), 0))");
    await client.query('CREATE SCHEMA IF NOT EXISTS relay');
    await client.query('CREATE TABLE IF NOT EXISTS relay.schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM relay.schema_migrations');
    const from = rows[0]?.v ?? 0;
    if (from > LATEST_VERSION) {
      throw new SchemaTooNewError(`the database's queue schema is at version ${from}, newer than this relay knows (${LATEST_VERSION}): upgrade this relay before starting it against this database`);
    }
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (m.version <= from) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO relay.schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
    return { from, to: Math.max(from, LATEST_VERSION), applied };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
