/**
 * The cluster's drafts in the shared database (relay.drafts, migration 4). Each relay holds the
 * drafts it created and renews that hold every third of leaseTimeout; a relay that dies for good
 * stops renewing, and after leaseTimeout another relay takes its drafts over and deletes them
 * (a draft still 'building' was left by an attempt that died with its relay: another relay sends
 * the message again with a draft of its own). On the file spool these records stayed on the dead
 * relay's disk, and its drafts stayed in the sending mailbox's Drafts folder.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { DraftRecord, DraftStore } from '../spool.js';
import { CHANNEL } from './listener.js';

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>;

interface DraftRow {
  draft_id: string;
  mailbox: string;
  graph_profile: string | null;
  queue_id: string;
  state: 'building' | 'delete';
  since: string;
  attempts: number;
}

/** Wakes the cluster for each mailbox of `rows` (a slot held for a DELETE was given back there). */
const wakeEach = (rows: string) => `SELECT pg_notify('${CHANNEL}', 'wake ' || mailbox) FROM ${rows}`;

function toRecord(row: DraftRow): DraftRecord {
  return { draftId: row.draft_id, mailbox: row.mailbox, ...(row.graph_profile ? { graphProfile: row.graph_profile } : {}), queueId: row.queue_id, state: row.state, since: Number(row.since), attempts: row.attempts, retryAt: 0 };
}

export class PgDraftStore implements DraftStore {
  readonly intervalMs: number;
  /**
   * Who holds a draft: the relay's name (host:pid, as in its logs) and a random part, since two
   * relays can share both (containers on the host's network, each PID 1), and one starting must not
   * take the other's drafts. A restarted relay is a new holder: its predecessor's drafts lapse and
   * are taken over like any stopped relay's.
   */
  private readonly owner: string;

  constructor(
    private readonly query: Query,
    node: string,
    private readonly leaseMs: number,
    private readonly maxInFlight: () => number,
  ) {
    this.owner = `${node}#${randomBytes(4).toString('hex')}`;
    // Renewed three times per lease, like a message's lease (a missed beat or two loses nothing).
    this.intervalMs = Math.max(100, Math.floor(leaseMs / 3));
  }

  /** Drafts nobody holds any more (their relay stopped renewing), now held by this relay, to be deleted. */
  private async takeOver(): Promise<DraftRecord[]> {
    const { rows } = await this.query<DraftRow>(
      `UPDATE relay.drafts SET owner = $1, owner_until = now() + $2 * interval '1 millisecond', state = 'delete', deleting_until = NULL
        WHERE owner_until < now() RETURNING draft_id, mailbox, graph_profile, queue_id, state, since, attempts`,
      [this.owner, this.leaseMs],
    );
    return rows.map(toRecord);
  }

  load(): Promise<DraftRecord[]> {
    return this.takeOver();
  }

  async put(record: DraftRecord): Promise<void> {
    // A slot held for its DELETE is given back with the new state, and the cluster told of it.
    await this.query(
      `WITH held AS (SELECT mailbox FROM relay.drafts WHERE draft_id = $1 AND deleting_until IS NOT NULL),
            up AS (INSERT INTO relay.drafts (draft_id, mailbox, graph_profile, queue_id, state, since, attempts, owner, owner_until)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond')
                   ON CONFLICT (draft_id) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts, owner = EXCLUDED.owner,
                     owner_until = EXCLUDED.owner_until, deleting_until = NULL)
       ${wakeEach('held')}`,
      [record.draftId, record.mailbox, record.graphProfile ?? null, record.queueId, record.state, record.since, record.attempts, this.owner, this.leaseMs],
    );
  }

  async takeSlot(draftId: string): Promise<'taken' | 'busy' | 'missing' | 'other'> {
    const { rows } = await this.query<{ slot: 'taken' | 'busy' | 'missing' | 'other' }>('SELECT relay.take_draft_slot($1, $2, $3, $4) AS slot', [draftId, this.owner, this.maxInFlight(), this.leaseMs]);
    return rows[0]?.slot ?? 'missing';
  }

  /** Gives the slot back (the DELETE did not go out after all) and wakes the cluster for it. */
  async releaseSlot(draftId: string): Promise<void> {
    await this.query(
      `WITH r AS (UPDATE relay.drafts SET deleting_until = NULL WHERE draft_id = $1 AND owner = $2 AND deleting_until IS NOT NULL RETURNING mailbox)
       ${wakeEach('r')}`,
      [draftId, this.owner],
    );
  }

  async drop(draftId: string): Promise<void> {
    await this.query(
      `WITH d AS (DELETE FROM relay.drafts WHERE draft_id = $1 RETURNING mailbox, deleting_until)
       ${wakeEach('d WHERE deleting_until IS NOT NULL')}`,
      [draftId],
    );
  }

  async heartbeat(): Promise<DraftRecord[]> {
    await this.query(`UPDATE relay.drafts SET owner_until = now() + $2 * interval '1 millisecond' WHERE owner = $1`, [this.owner, this.leaseMs]);
    return this.takeOver();
  }
}
