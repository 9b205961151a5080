/**
 * The cluster's drafts in the shared database (relay.drafts, migration 4). Each relay holds the
 * drafts it created and renews that hold every third of leaseTimeout; a relay that dies for good
 * stops renewing, and after leaseTimeout another relay takes its drafts over and deletes them
 * (a draft still 'building' was left by an attempt that died with its relay: another relay sends
 * the message again with a draft of its own). On the file spool these records stayed on the dead
 * relay's disk, and its drafts stayed in the sending mailbox's Drafts folder.
 */
import type pg from 'pg';
import type { DraftRecord, DraftStore } from '../spool.js';

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

function toRecord(row: DraftRow): DraftRecord {
  return { draftId: row.draft_id, mailbox: row.mailbox, ...(row.graph_profile ? { graphProfile: row.graph_profile } : {}), queueId: row.queue_id, state: row.state, since: Number(row.since), attempts: row.attempts, retryAt: 0 };
}

export class PgDraftStore implements DraftStore {
  readonly intervalMs: number;

  constructor(
    private readonly query: Query,
    private readonly node: string,
    private readonly leaseMs: number,
    private readonly maxInFlight: () => number,
  ) {
    // Renewed three times per lease, like a message's lease (a missed beat or two loses nothing).
    this.intervalMs = Math.max(100, Math.floor(leaseMs / 3));
  }

  /**
   * Drafts nobody holds any more (their relay stopped renewing), now held by this relay, to be
   * deleted. At start also those under this relay's own name: a container restarted in place has
   * the same host name and PID, and nothing of this process holds a draft yet.
   */
  private async takeOver(atStart: boolean): Promise<DraftRecord[]> {
    const { rows } = await this.query<DraftRow>(
      `UPDATE relay.drafts SET owner = $1, owner_until = now() + $2 * interval '1 millisecond', state = 'delete'
        WHERE owner_until < now() OR ($3 AND owner = $1) RETURNING draft_id, mailbox, graph_profile, queue_id, state, since, attempts`,
      [this.node, this.leaseMs, atStart],
    );
    return rows.map(toRecord);
  }

  load(): Promise<DraftRecord[]> {
    return this.takeOver(true);
  }

  async put(record: DraftRecord): Promise<void> {
    await this.query(
      `INSERT INTO relay.drafts (draft_id, mailbox, graph_profile, queue_id, state, since, attempts, owner, owner_until)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond')
       ON CONFLICT (draft_id) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts, owner = EXCLUDED.owner, owner_until = EXCLUDED.owner_until, deleting_until = NULL`,
      [record.draftId, record.mailbox, record.graphProfile ?? null, record.queueId, record.state, record.since, record.attempts, this.node, this.leaseMs],
    );
  }

  async takeSlot(draftId: string): Promise<boolean> {
    const { rows } = await this.query<{ taken: boolean }>('SELECT relay.take_draft_slot($1, $2, $3, $4) AS taken', [draftId, this.node, this.maxInFlight(), this.leaseMs]);
    return rows[0]?.taken === true;
  }

  async releaseSlot(draftId: string): Promise<void> {
    await this.query('UPDATE relay.drafts SET deleting_until = NULL WHERE draft_id = $1 AND owner = $2', [draftId, this.node]);
  }

  async drop(draftId: string): Promise<void> {
    await this.query('DELETE FROM relay.drafts WHERE draft_id = $1', [draftId]);
  }

  async heartbeat(): Promise<DraftRecord[]> {
    await this.query(`UPDATE relay.drafts SET owner_until = now() + $2 * interval '1 millisecond' WHERE owner = $1`, [this.node, this.leaseMs]);
    return this.takeOver(false);
  }
}
