/**
 * The Spool boundary: what intake, scheduler and queue commands need from durable storage.
 * FsSpool (fs/) is the file-system implementation; the conformance suite in test/unit runs against it.
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
  /** The message file's path, for readers that need byte ranges (the large-message path). */
  messagePath(id: string, where?: 'queue' | 'failed'): string;
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
}
