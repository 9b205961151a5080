/**
 * The Spool boundary: what intake, scheduler and queue commands need from durable storage.
 * FsSpool (fs/) is the file-system implementation for one node, PgSpool (postgres/) the shared
 * one for a cluster; test/conformance runs one suite against both, so neither can drift.
 */
import type { Readable } from 'node:stream';
import type { SpoolEntry } from './entry.js';

export type NewMessage = Omit<SpoolEntry, 'version' | 'size' | 'attempts' | 'nextAttemptAt' | 'held'>;

export interface RecoveryReport {
  /** Entries waiting in the queue (deferred or never tried), in queue-id order. */
  queued: SpoolEntry[];
  /** Half-written intake files from before a crash, removed (never acknowledged with 250). */
  discardedPartial: number;
  /** Unreadable records moved to corrupt/ for a person to inspect; area: where the file-system spool found it. */
  quarantined: Array<{ id: string; reason: string; area?: 'journal' | 'tmp' | 'queue' | 'failed' }>;
  /** Interrupted moves to failed/ that were completed. */
  completedMoves: number;
  /** Acknowledged messages that were only in the intake journal: queued again, filed into queue/ in the background. */
  replayed: number;
}

export interface MessageWriter {
  readonly id: string;
  write(chunk: Buffer): Promise<void>;
  /** Makes the message durable (fsync + rename + directory fsync); resolves only when it is. */
  commit(meta: NewMessage): Promise<SpoolEntry>;
  /** Removes everything written so far; safe to call after a failed commit. */
  abort(): Promise<void>;
}

export interface Spool {
  recover(): Promise<RecoveryReport>;
  beginMessage(id: string): Promise<MessageWriter>;
  readMessage(id: string): Promise<Buffer>;
  openMessage(id: string): Readable;
  /**
   * Runs `use` with a local file holding the message, for readers that need byte ranges (the
   * large-message path, bounce headers). The file-system spool passes its own file; a database
   * spool streams the chunks into a temporary file (bounded memory) and removes it afterwards.
   */
  withMessageFile<T>(id: string, where: 'queue' | 'failed', use: (file: string) => Promise<T>): Promise<T>;
  get(id: string, where?: 'queue' | 'failed'): Promise<SpoolEntry | null>;
  list(where: 'queue' | 'failed'): Promise<SpoolEntry[]>;
  /** How many records an area holds (cheap: no record is read). */
  count(where: 'queue' | 'failed'): Promise<number>;
  update(entry: SpoolEntry): Promise<void>;
  /** Delivered: removes the message from the queue. */
  remove(id: string): Promise<void>;
  /** Final failure: moves the message and its record (with the reason) to failed/. */
  moveToFailed(entry: SpoolEntry): Promise<void>;
  /** Moves a failed message back into the queue (queue retry). */
  requeueFailed(entry: SpoolEntry): Promise<void>;
  deleteFailed(id: string): Promise<void>;
  /** Lets background work finish (up to the deadline) and closes files; the spool is not used after. */
  close(deadlineMs?: number): Promise<void>;
  /** Proves the spool is writable right now (readiness): create, fsync and remove a probe file. */
  probeWritable(): Promise<void>;
  /**
   * Leases up to `max` due messages (not held, not leased by anyone) for delivery by `node`,
   * within the per-mailbox limits: in-flight leases, the mailbox's pause, sends of the last
   * minute and day. A lease not renewed within `leaseMs` lapses and the message is due again.
   * With `standbyPerSlot` (a shared spool), each mailbox that got slots also leases that many more
   * per slot on standby (flagged `standby`), as settleAndClaim does for every request that ends.
   */
  claim(node: string, max: number, limits: ClaimLimits, now?: number, standbyPerSlot?: number): Promise<Lease[]>;
  /**
   * Extends a lease; false when it was lost (lapsed and taken over, or the message was removed).
   * `sending`: its request is under way, so a standby lease counts as a slot from now on even if
   * the settle that promoted it never reached the store.
   */
  renew(lease: Lease, leaseMs: number, sending?: boolean): Promise<boolean>;
  /** Records an attempt's outcome under its lease; false (nothing written) when the lease was lost. */
  settle(lease: Lease, outcome: Settlement): Promise<boolean>;
  /** No request to this mailbox before `untilMs` (a Retry-After), for every node sharing the spool. */
  pauseMailbox(mailbox: string, untilMs: number): Promise<void>;
  /**
   * Wake-ups from other nodes sharing the spool (new mail, a freed slot, a Retry-After pause);
   * absent where nothing else writes to the spool.
   */
  subscribe?(handler: (event: SpoolEvent) => void): () => void;
  /**
   * True while the events of subscribe() arrive as other nodes cause them (a 'heard' event follows
   * every gap, since what was said during it was missed).
   */
  hearsOthersNow?(): boolean;
  /** The mailbox's shared Retry-After pause (epoch ms, 0 when none), read from the store itself. */
  mailboxPausedUntil?(mailbox: string): Promise<number>;
  /**
   * settle, and at once lease the mailbox's next due message to `node` within the limits (the
   * slot passes on without being free in between); absent where claims are not shared. With
   * `handOver.promote`, the slot goes to that standby lease of this node (its request already
   * started); `handOver.standby` more are leased on standby, ready for the node's next free slot.
   */
  settleAndClaim?(lease: Lease, outcome: Settlement, node: string, limits: ClaimLimits, now?: number, handOver?: HandOver): Promise<{ held: boolean; next: Lease[]; standby: Lease[] }>;
  /** The whole queue's figures where several relays share it (metrics show the cluster's, not this node's). */
  clusterStats?(): Promise<{ depth: number; oldestReceivedAt: number | null; held: number; inFlightByMailbox: Map<string, number> }>;
  /**
   * Where several relays share the spool: a per-minute activity record in the shared store, so the
   * console's counts and charts are the cluster's (each node adds its own counts under `node`).
   */
  activityStore?(node: string): ActivityStore;
  /**
   * Where several relays share the spool: the drafts the large-message path created, in the shared
   * store, so a relay that dies for good leaves its drafts to the others (see DraftStore).
   */
  draftStore?(node: string, leaseMs: number, maxInFlightPerMailbox: () => number): DraftStore;
}

/** A draft the large-message path created in the sending mailbox (delivery/draft-cleanup.ts). */
export interface DraftRecord {
  draftId: string;
  mailbox: string;
  graphProfile?: string;
  queueId: string;
  /** building: an attempt is using it; delete: waiting for its DELETE. */
  state: 'building' | 'delete';
  since: number;
  attempts: number;
  retryAt: number;
}

/** Where the records of drafts live: a file beside the spool, or the shared database. */
export interface DraftStore {
  /**
   * The drafts to delete when starting: everything a file records (its relay's previous run), or in
   * a shared store every draft whose relay stopped holding it, taken over by this one.
   */
  load(): Promise<DraftRecord[]>;
  /** Records one draft's state; `all` is every draft this relay holds (a file is written whole). */
  put(record: DraftRecord, all: readonly DraftRecord[]): Promise<void>;
  /** Forgets one draft (deleted, or sent with its message). */
  drop(draftId: string, all: readonly DraftRecord[]): Promise<void>;
  /**
   * Shared stores, every `intervalMs`: keeps this relay's drafts held, and takes over the drafts of
   * relays that stopped holding theirs (each comes back to be deleted, its attempt having died).
   */
  heartbeat?(): Promise<DraftRecord[]>;
  readonly intervalMs?: number;
  /**
   * Shared stores: takes one of the mailbox's in-flight slots for the draft's DELETE, counted with
   * every relay's deliveries; given back by put, drop or releaseSlot. 'busy': all taken or the
   * mailbox paused; 'missing': no record of the draft in the store; 'other': another relay holds
   * it now. Without it the relay's own count is the limit (it is the only one sending).
   */
  takeSlot?(draftId: string): Promise<'taken' | 'busy' | 'missing' | 'other'>;
  releaseSlot?(draftId: string): Promise<void>;
}

/** Counts of one minute (minute = ms since the epoch / 60,000, rounded down). */
export interface MinuteCounts {
  minute: number;
  accepted: number;
  delivered: number;
  deferred: number;
  failed: number;
  /** Highest queue depth sampled in the minute; null when none was. */
  depth: number | null;
}

export interface ActivityStore {
  /** Adds these counts to this node's rows (depth: the higher of the stored and the new sample). */
  add(counts: readonly MinuteCounts[]): Promise<void>;
  /** Every node's counts summed per minute (depth: the highest any node sampled), from `sinceMinute` on. */
  read(sinceMinute: number): Promise<MinuteCounts[]>;
}

export type SpoolEvent =
  | { kind: 'wake'; mailbox: string | null }
  | { kind: 'pause'; mailbox: string; untilMs: number }
  /** Notifications flow again after a gap (or for the first time): what was said meanwhile is lost, so look again. */
  | { kind: 'heard' };

/** A change refused because the message is being delivered right now (queue commands answer 409). */
export class SpoolBusyError extends Error {}

export interface ClaimLimits {
  maxInFlightPerMailbox: number;
  /** 0 = no limit. */
  messagesPerMinute: number;
  recipientsPerDay: number;
  leaseMs: number;
}

/** What a node asks of a settle on a shared spool (settleAndClaim). */
export interface HandOver {
  /** A standby lease of this node that took the settled lease's slot (its request has started). */
  promote?: Lease;
  /** How many messages to lease on standby for this node's next free slot. */
  standby?: number;
}

export interface Lease {
  entry: SpoolEntry;
  /** Fencing token: renewals and the outcome count only while it is still the message's lease. */
  token: string;
  /**
   * Leased on standby (a shared spool's claim with standbyPerSlot): no slot of the mailbox yet; its
   * node starts it in a slot one of its requests frees (settleAndClaim's handOver.promote).
   */
  standby?: true;
  /** A standby lease's message up to STANDBY_READ_AHEAD_BYTES, read in the same query that leased it. */
  content?: Buffer;
}

/**
 * A standby message this small comes with its bytes, so its request can start without a read when
 * a slot frees. Alerts are a few KB; one per slot is held in memory.
 */
export const STANDBY_READ_AHEAD_BYTES = 1024 * 1024;

export type Settlement =
  | { kind: 'delivered' }
  /** Retried later: the entry carries the new attempts, nextAttemptAt and lastError. */
  | { kind: 'deferred'; entry: SpoolEntry }
  | { kind: 'failed'; entry: SpoolEntry }
  /** Nothing was sent (a Retry-After came first): not an attempt, the send reservation is returned. */
  | { kind: 'postponed'; untilMs: number };
