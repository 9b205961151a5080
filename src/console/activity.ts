/**
 * What the console shows of the relay's recent past, kept in memory: the last lifecycle events
 * (the log lines themselves, after pino's redaction; bodies and secrets are never logged in the
 * first place) and per-minute counts over 24 hours (1,440 buckets) of messages accepted,
 * delivered, deferred and failed, with the queue depth sampled in each minute. Fed by tapping the
 * logger's output, so it counts exactly what the log says happened.
 */
import type { Logger } from '../log.js';
import type { MinuteCounts } from '../spool/spool.js';
import { pino } from 'pino';

export const MINUTE_MS = 60_000;
export const DAY_MINUTES = 24 * 60;
/** "The last few hundred lifecycle events" (issue 14). */
export const EVENT_CAPACITY = 500;

export interface LogRecord {
  time?: string;
  level?: string;
  event?: string;
  queueId?: string;
  about?: string;
  msg?: string;
  [key: string]: unknown;
}

/** One minute's counts (the same shape the shared store keeps: spool.ts MinuteCounts). */
export type MinuteBucket = MinuteCounts;
type Counter = keyof Omit<MinuteBucket, 'minute' | 'depth'>;
export type Totals = Record<Counter, number>;

const emptyBucket = (minute: number): MinuteBucket => ({ minute, accepted: 0, delivered: 0, deferred: 0, failed: 0, depth: null });

/** Adds `from` into `into` (depth: the higher sample). */
export function addInto(into: MinuteBucket, from: MinuteBucket): MinuteBucket {
  into.accepted += from.accepted;
  into.delivered += from.delivered;
  into.deferred += from.deferred;
  into.failed += from.failed;
  if (from.depth !== null) into.depth = Math.max(into.depth ?? 0, from.depth);
  return into;
}

/**
 * The `minutes` minutes up to `lastMinute`, oldest first, empty minutes filled in, from any number
 * of per-minute lists (the cluster's stored sums and this node's counts not stored yet) added up.
 */
export function seriesFrom(lists: ReadonlyArray<readonly MinuteBucket[]>, lastMinute: number, minutes = DAY_MINUTES): MinuteBucket[] {
  const first = lastMinute - minutes + 1;
  const out = Array.from({ length: minutes }, (_, i) => emptyBucket(first + i));
  for (const list of lists) {
    for (const b of list) if (b.minute >= first && b.minute <= lastMinute) addInto(out[b.minute - first] as MinuteBucket, b);
  }
  return out;
}

export function totalsOf(buckets: readonly MinuteBucket[]): Totals {
  const sum = { accepted: 0, delivered: 0, deferred: 0, failed: 0 };
  for (const b of buckets) {
    sum.accepted += b.accepted;
    sum.delivered += b.delivered;
    sum.deferred += b.deferred;
    sum.failed += b.failed;
  }
  return sum;
}

/**
 * Counts not yet added to the shared store (PostgreSQL spool): taken in a batch every few seconds,
 * put back when the write fails, so each count reaches the store once. Bounded like the buckets:
 * minutes older than the day are dropped (a database away for a day loses only what the chart
 * would no longer show).
 */
export class PendingCounts {
  private readonly minutes = new Map<number, MinuteBucket>();

  private at(minute: number): MinuteBucket {
    let b = this.minutes.get(minute);
    if (!b) {
      b = emptyBucket(minute);
      this.minutes.set(minute, b);
      for (const key of this.minutes.keys()) if (key <= minute - DAY_MINUTES) this.minutes.delete(key);
    }
    return b;
  }

  count(minute: number, counter: Counter): void {
    this.at(minute)[counter] += 1;
  }

  depth(minute: number, depth: number): void {
    const b = this.at(minute);
    b.depth = Math.max(b.depth ?? 0, depth);
  }

  /** Everything pending, oldest first; the pending record is empty afterwards. */
  take(): MinuteBucket[] {
    const out = [...this.minutes.values()].sort((a, b) => a.minute - b.minute);
    this.minutes.clear();
    return out;
  }

  /** Puts a batch back whose write failed (added to what was counted meanwhile). */
  restore(batch: readonly MinuteBucket[]): void {
    for (const b of batch) addInto(this.at(b.minute), b);
  }

  /** A copy of what is pending, for a read that adds it to the stored sums. */
  peek(): MinuteBucket[] {
    return [...this.minutes.values()].map((b) => ({ ...b }));
  }
}

const COUNTED: Readonly<Record<string, Counter>> = {
  'smtp.accepted': 'accepted',
  'delivery.delivered': 'delivered',
  'delivery.deferred': 'deferred',
  'delivery.failed': 'failed',
};

// Fields every line has (or that say nothing to a person reading the console).
const NOISE = new Set(['service', 'pid', 'hostname']);

export class Activity {
  private readonly events: LogRecord[] = [];
  private readonly buckets = new Map<number, MinuteBucket>();

  /** `pending`: also record every count for the shared store (the PostgreSQL spool's cluster-wide figures). */
  constructor(
    private readonly now: () => number,
    readonly pending: PendingCounts | null = null,
  ) {}

  /** One serialised log line (JSON); lines that are not JSON objects with an event are ignored. */
  recordLine(line: string): void {
    let record: LogRecord;
    try {
      const parsed = JSON.parse(line) as unknown;
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return;
      record = parsed as LogRecord;
    } catch {
      return;
    }
    if (typeof record.event !== 'string') return;
    for (const key of NOISE) delete record[key];
    this.events.push(record);
    if (this.events.length > EVENT_CAPACITY) this.events.splice(0, this.events.length - EVENT_CAPACITY);
    const counter = COUNTED[record.event];
    if (counter) {
      const bucket = this.bucket(this.now());
      bucket[counter] += 1;
      this.pending?.count(bucket.minute, counter);
    }
  }

  sampleDepth(depth: number): void {
    const bucket = this.bucket(this.now());
    bucket.depth = Math.max(bucket.depth ?? 0, depth);
    this.pending?.depth(bucket.minute, depth);
  }

  private bucket(at: number): MinuteBucket {
    const minute = Math.floor(at / MINUTE_MS);
    let bucket = this.buckets.get(minute);
    if (!bucket) {
      bucket = emptyBucket(minute);
      this.buckets.set(minute, bucket);
      // Forget what is older than the day the charts show.
      for (const key of this.buckets.keys()) if (key <= minute - DAY_MINUTES) this.buckets.delete(key);
    }
    return bucket;
  }

  /** The last `minutes` minutes, oldest first, with empty minutes filled in. */
  series(minutes = DAY_MINUTES): MinuteBucket[] {
    return seriesFrom([[...this.buckets.values()]], this.currentMinute(), minutes);
  }

  currentMinute(): number {
    return Math.floor(this.now() / MINUTE_MS);
  }

  /** Totals over the last `minutes` minutes. */
  totals(minutes: number): Totals {
    return totalsOf(this.series(minutes));
  }

  /** Newest first. */
  recent(limit = EVENT_CAPACITY, filter?: (record: LogRecord) => boolean): LogRecord[] {
    const out: LogRecord[] = [];
    for (let i = this.events.length - 1; i >= 0 && out.length < limit; i -= 1) {
      const record = this.events[i] as LogRecord;
      if (!filter || filter(record)) out.push(record);
    }
    return out;
  }

  /** Every event about one message (its own, and a bounce's "about" it), oldest first. */
  about(queueId: string): LogRecord[] {
    return this.events.filter((r) => r.queueId === queueId || r.about === queueId);
  }
}

/**
 * Copies every line the logger writes to `onLine`. pino writes each serialised line to its
 * destination stream (pino.symbols.streamSym, shared by child loggers); the copy is taken there,
 * after redaction, and the line still goes where it went before.
 */
export function tapLogLines(logger: Logger, onLine: (line: string) => void): () => void {
  const holder = logger as unknown as Record<symbol, { write: (chunk: string) => unknown } | undefined>;
  const stream = holder[pino.symbols.streamSym];
  if (!stream || typeof stream.write !== 'function') return () => undefined;
  const original = stream.write;
  stream.write = function (this: unknown, chunk: string) {
    try {
      onLine(String(chunk));
    } catch {
      // The console's copy must never cost a log line.
    }
    return original.call(this, chunk);
  };
  return () => {
    stream.write = original;
  };
}
