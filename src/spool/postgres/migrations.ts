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
    name: 'claim and settle in one round trip',
    // Why functions: between one request to Graph and the next in the same slot, the outcome and the
    // next claim took seven round trips (BEGIN, settle, lock, counts, due rows, lease, COMMIT); under
    // load each cost 2-3 ms, and three relays kept one mailbox's 4 slots busy only 70-82 % of the
    // time (bench figure 8, traced per step). A VOLATILE plpgsql function takes a fresh snapshot
    // for each statement (READ COMMITTED), so the counts made after the mailbox's row lock see every
    // claim committed before it, as the separate statements did.
    sql: `
-- A lease is on standby while its node holds it ready for a slot the node already has: not a request
-- in flight (not counted against maxInFlightPerMailbox), but its sends are reserved and no other node
-- takes it. The node promotes it the moment one of its own requests to the mailbox ends.
ALTER TABLE relay.messages ADD COLUMN standby boolean NOT NULL DEFAULT false;

-- Leases up to p_max due messages of one mailbox whose row the caller has locked, within the limits,
-- and then up to p_standby more on standby (only where a slot was leased or p_have_slot says the
-- node holds one). Rows say which they are.
CREATE FUNCTION relay.claim_for(p_mailbox text, p_node text, p_max int, p_max_in_flight int, p_per_minute int, p_per_day int, p_lease_ms bigint, p_now bigint,
                                p_standby int DEFAULT 0, p_have_slot boolean DEFAULT false)
RETURNS TABLE (entry jsonb, held boolean, run_at bigint, lease_token uuid, standby boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_send bigint;
  v_total bigint;
  v_day bigint;
  v_ids text[] := ARRAY[]::text[];
  v_row record;
BEGIN
  SELECT greatest(0, least(p_max, p_max_in_flight - count(*))) INTO v_send FROM relay.messages m
   WHERE m.mailbox = p_mailbox AND m.lease_token IS NOT NULL AND m.lease_until >= now() AND NOT m.standby;
  v_total := v_send + CASE WHEN v_send > 0 OR p_have_slot THEN greatest(0, p_standby) ELSE 0 END;
  IF p_per_minute > 0 THEN
    v_total := least(v_total, p_per_minute - (SELECT count(*) FROM relay.sends s WHERE s.mailbox = p_mailbox AND s.at > now() - interval '1 minute'));
  END IF;
  IF v_total <= 0 THEN RETURN; END IF;
  SELECT coalesce(sum(s.rcpts), 0) INTO v_day FROM relay.sends s WHERE s.mailbox = p_mailbox AND s.at > now() - interval '1 day';
  FOR v_row IN
    SELECT m.id, m.rcpts FROM relay.messages m
     WHERE m.mailbox = p_mailbox AND m.state = 'queued' AND NOT m.held AND m.run_at <= p_now
       AND (m.lease_token IS NULL OR m.lease_until < now())
     ORDER BY m.run_at, m.id LIMIT v_total FOR UPDATE SKIP LOCKED
  LOOP
    -- A message larger than the whole day's budget goes once the window is empty, rather than never.
    EXIT WHEN p_per_day > 0 AND v_day + v_row.rcpts > p_per_day AND v_day > 0;
    v_day := v_day + v_row.rcpts;
    v_ids := v_ids || v_row.id;
  END LOOP;
  IF cardinality(v_ids) = 0 THEN RETURN; END IF;
  -- The lease, its send reservation (the minute and day windows) and the mailbox's turn; the
  -- first v_send of them (in due order) are slots, the rest standby.
  RETURN QUERY
    WITH c AS (UPDATE relay.messages m SET lease_owner = p_node, lease_token = gen_random_uuid(), lease_until = now() + p_lease_ms * interval '1 millisecond',
                      standby = array_position(v_ids, m.id) > v_send
                WHERE m.id = ANY (v_ids) RETURNING m.mailbox, m.rcpts, m.entry, m.held, m.run_at, m.lease_token, m.standby),
         s AS (INSERT INTO relay.sends (mailbox, at, rcpts, lease_token) SELECT c.mailbox, now(), c.rcpts, c.lease_token FROM c),
         b AS (UPDATE relay.mailboxes mb SET last_claim_at = now() WHERE mb.mailbox = p_mailbox)
    SELECT c.entry, c.held, c.run_at, c.lease_token, c.standby FROM c ORDER BY c.standby, c.run_at;
END
$fn$;

-- Records an attempt's outcome under its lease (p_kind: delivered, postponed, deferred, failed). The
-- slot it held goes to p_promote, a standby lease of the same node whose request has already started
-- (the node promoted it the moment this request ended: the database counts the slot once throughout,
-- first under this lease, then under that one). With p_claim the mailbox's next due messages are
-- leased to p_node at once: a slot if none was promoted, and p_standby on standby. The first row says
-- whether the lease still held; leases follow. When no slot passed on, the cluster is woken (p_channel).
CREATE FUNCTION relay.settle_and_claim(p_id text, p_token uuid, p_kind text, p_entry jsonb, p_held boolean, p_run_at bigint,
                                       p_claim boolean, p_node text, p_max_in_flight int, p_per_minute int, p_per_day int, p_lease_ms bigint, p_now bigint, p_channel text,
                                       p_promote uuid DEFAULT NULL, p_standby int DEFAULT 0)
RETURNS TABLE (settled boolean, entry jsonb, held boolean, run_at bigint, lease_token uuid, standby boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_mailbox text;
  v_next int := 0;
  v_promoted boolean := false;
BEGIN
  IF p_kind = 'delivered' THEN
    DELETE FROM relay.messages m WHERE m.id = p_id AND m.lease_token = p_token RETURNING m.mailbox INTO v_mailbox;
  ELSIF p_kind = 'postponed' THEN
    -- Nothing was sent: the send reservation is returned.
    UPDATE relay.messages m SET run_at = p_run_at, lease_owner = NULL, lease_token = NULL, lease_until = NULL, standby = false
     WHERE m.id = p_id AND m.lease_token = p_token RETURNING m.mailbox INTO v_mailbox;
    IF v_mailbox IS NOT NULL THEN DELETE FROM relay.sends s WHERE s.lease_token = p_token; END IF;
  ELSE
    UPDATE relay.messages m SET state = CASE WHEN p_kind = 'failed' THEN 'failed' ELSE 'queued' END, entry = p_entry, held = p_held, run_at = p_run_at,
           lease_owner = NULL, lease_token = NULL, lease_until = NULL, standby = false
     WHERE m.id = p_id AND m.lease_token = p_token RETURNING m.mailbox INTO v_mailbox;
  END IF;
  -- The promoted request is under way whatever became of this lease: it counts from now on.
  IF p_promote IS NOT NULL THEN
    UPDATE relay.messages m SET standby = false WHERE m.lease_token = p_promote AND m.standby AND m.lease_until >= now();
    v_promoted := FOUND;
    -- Its send is dated when it left, not when it went on standby: the minute window stays true.
    IF v_promoted THEN UPDATE relay.sends s SET at = now() WHERE s.lease_token = p_promote; END IF;
  END IF;
  IF v_mailbox IS NULL THEN
    RETURN QUERY SELECT false, NULL::jsonb, NULL::boolean, NULL::bigint, NULL::uuid, NULL::boolean;
    RETURN;
  END IF;
  RETURN QUERY SELECT true, NULL::jsonb, NULL::boolean, NULL::bigint, NULL::uuid, NULL::boolean;
  -- Waits for another node's claim on this mailbox to end (never the other way round: a claim
  -- holding the mailbox row only skips locked messages), then counts what that claim committed.
  IF p_claim THEN
    PERFORM 1 FROM relay.mailboxes mb WHERE mb.mailbox = v_mailbox AND coalesce(mb.paused_until, '-infinity') <= now() FOR UPDATE;
    IF FOUND THEN
      RETURN QUERY SELECT NULL::boolean, c.entry, c.held, c.run_at, c.lease_token, c.standby
                     FROM relay.claim_for(v_mailbox, p_node, CASE WHEN v_promoted THEN 0 ELSE 1 END, p_max_in_flight, p_per_minute, p_per_day, p_lease_ms, p_now, p_standby, v_promoted) c;
      GET DIAGNOSTICS v_next = ROW_COUNT;
    END IF;
  END IF;
  IF v_next = 0 AND NOT v_promoted THEN PERFORM pg_notify(p_channel, 'wake ' || v_mailbox); END IF;
END
$fn$;
`,
  },
  {
    version: 3,
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
  {
    version: 4,
    name: 'drafts held by relays, taken over when a relay stops',
    sql: `
-- The large-message path's drafts (draft-store.ts): each is held by the relay that created it while
-- that relay renews owner_until; once it lapses, another relay takes the draft over and deletes it.
CREATE TABLE relay.drafts (
  draft_id text PRIMARY KEY,
  mailbox text NOT NULL,
  graph_profile text,
  queue_id text NOT NULL,
  state text NOT NULL CHECK (state IN ('building', 'delete')),
  since bigint NOT NULL,
  attempts int NOT NULL DEFAULT 0,
  owner text NOT NULL,
  owner_until timestamptz NOT NULL
);
CREATE INDEX drafts_owner ON relay.drafts (owner);
CREATE INDEX drafts_lapsing ON relay.drafts (owner_until);

-- A draft's DELETE is a request to the mailbox like any other: while one is under way it holds one
-- of the mailbox's in-flight slots (deleting_until, a lease like a delivery's), counted by claims.
ALTER TABLE relay.drafts ADD COLUMN deleting_until timestamptz;
CREATE INDEX drafts_deleting ON relay.drafts (mailbox) WHERE deleting_until IS NOT NULL;

CREATE FUNCTION relay.draft_deletes_in_flight(p_mailbox text) RETURNS bigint LANGUAGE sql STABLE AS $fn$
  SELECT count(*) FROM relay.drafts d WHERE d.mailbox = p_mailbox AND d.deleting_until >= now()
$fn$;

-- Takes a slot of the draft's mailbox for its DELETE, under the mailbox's row lock like a claim, so
-- the cluster's deliveries and DELETEs together stay within p_max_in_flight. Answers 'taken', 'busy'
-- (paused, or every slot in use), 'missing' (no row: never written) or 'other' (another relay holds it).
CREATE FUNCTION relay.take_draft_slot(p_draft text, p_owner text, p_max_in_flight int, p_lease_ms bigint) RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  v_mailbox text;
  v_owner text;
  v_busy bigint;
BEGIN
  SELECT d.mailbox, d.owner INTO v_mailbox, v_owner FROM relay.drafts d WHERE d.draft_id = p_draft;
  IF v_mailbox IS NULL THEN RETURN 'missing'; END IF;
  IF v_owner <> p_owner THEN RETURN 'other'; END IF;
  INSERT INTO relay.mailboxes (mailbox) VALUES (v_mailbox) ON CONFLICT (mailbox) DO NOTHING;
  PERFORM 1 FROM relay.mailboxes mb WHERE mb.mailbox = v_mailbox AND coalesce(mb.paused_until, '-infinity') <= now() FOR UPDATE;
  IF NOT FOUND THEN RETURN 'busy'; END IF;
  -- A fresh snapshot after the lock (READ COMMITTED, one per statement): every claim committed before it counts.
  SELECT count(*) + relay.draft_deletes_in_flight(v_mailbox) INTO v_busy FROM relay.messages m
   WHERE m.mailbox = v_mailbox AND m.lease_token IS NOT NULL AND m.lease_until >= now() AND NOT m.standby;
  IF v_busy >= p_max_in_flight THEN RETURN 'busy'; END IF;
  UPDATE relay.drafts d SET deleting_until = now() + p_lease_ms * interval '1 millisecond' WHERE d.draft_id = p_draft AND d.owner = p_owner;
  RETURN CASE WHEN FOUND THEN 'taken' ELSE 'other' END;
END
$fn$;

-- claim_for as in migration 2, counting the drafts' DELETEs under way as requests in flight.
CREATE OR REPLACE FUNCTION relay.claim_for(p_mailbox text, p_node text, p_max int, p_max_in_flight int, p_per_minute int, p_per_day int, p_lease_ms bigint, p_now bigint,
                                p_standby int DEFAULT 0, p_have_slot boolean DEFAULT false)
RETURNS TABLE (entry jsonb, held boolean, run_at bigint, lease_token uuid, standby boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_send bigint;
  v_total bigint;
  v_day bigint;
  v_ids text[] := ARRAY[]::text[];
  v_row record;
BEGIN
  -- In flight: the mailbox's leased deliveries and the drafts' DELETEs under way (migration 4).
  SELECT greatest(0, least(p_max, p_max_in_flight - count(*) - relay.draft_deletes_in_flight(p_mailbox))) INTO v_send FROM relay.messages m
   WHERE m.mailbox = p_mailbox AND m.lease_token IS NOT NULL AND m.lease_until >= now() AND NOT m.standby;
  v_total := v_send + CASE WHEN v_send > 0 OR p_have_slot THEN greatest(0, p_standby) ELSE 0 END;
  IF p_per_minute > 0 THEN
    v_total := least(v_total, p_per_minute - (SELECT count(*) FROM relay.sends s WHERE s.mailbox = p_mailbox AND s.at > now() - interval '1 minute'));
  END IF;
  IF v_total <= 0 THEN RETURN; END IF;
  SELECT coalesce(sum(s.rcpts), 0) INTO v_day FROM relay.sends s WHERE s.mailbox = p_mailbox AND s.at > now() - interval '1 day';
  FOR v_row IN
    SELECT m.id, m.rcpts FROM relay.messages m
     WHERE m.mailbox = p_mailbox AND m.state = 'queued' AND NOT m.held AND m.run_at <= p_now
       AND (m.lease_token IS NULL OR m.lease_until < now())
     ORDER BY m.run_at, m.id LIMIT v_total FOR UPDATE SKIP LOCKED
  LOOP
    -- A message larger than the whole day's budget goes once the window is empty, rather than never.
    EXIT WHEN p_per_day > 0 AND v_day + v_row.rcpts > p_per_day AND v_day > 0;
    v_day := v_day + v_row.rcpts;
    v_ids := v_ids || v_row.id;
  END LOOP;
  IF cardinality(v_ids) = 0 THEN RETURN; END IF;
  -- The lease, its send reservation (the minute and day windows) and the mailbox's turn; the
  -- first v_send of them (in due order) are slots, the rest standby.
  RETURN QUERY
    WITH c AS (UPDATE relay.messages m SET lease_owner = p_node, lease_token = gen_random_uuid(), lease_until = now() + p_lease_ms * interval '1 millisecond',
                      standby = array_position(v_ids, m.id) > v_send
                WHERE m.id = ANY (v_ids) RETURNING m.mailbox, m.rcpts, m.entry, m.held, m.run_at, m.lease_token, m.standby),
         s AS (INSERT INTO relay.sends (mailbox, at, rcpts, lease_token) SELECT c.mailbox, now(), c.rcpts, c.lease_token FROM c),
         b AS (UPDATE relay.mailboxes mb SET last_claim_at = now() WHERE mb.mailbox = p_mailbox)
    SELECT c.entry, c.held, c.run_at, c.lease_token, c.standby FROM c ORDER BY c.standby, c.run_at;
END
$fn$;
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
