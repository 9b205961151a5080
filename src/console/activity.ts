/**
 * What the console shows of the relay's recent past, kept in memory: the last lifecycle events
 * (the log lines themselves, after pino's redaction; bodies and secrets are never logged in the
 * first place) and per-minute counts over 24 hours (1,440 buckets) of messages accepted,
 * delivered, deferred and failed, with the queue depth sampled in each minute. Fed by tapping the
 * logger's output, so it counts exactly what the log says happened.
 */
import type { Logger } from '../log.js';
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

export interface MinuteBucket {
  minute: number;
  accepted: number;
  delivered: number;
  deferred: number;
  failed: number;
  /** Highest queue depth sampled in this minute; null when none was. */
  depth: number | null;
}

const COUNTED: Readonly<Record<string, keyof Omit<MinuteBucket, 'minute' | 'depth'>>> = {
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

  constructor(private readonly now: () => number) {}

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
    if (counter) this.bucket(this.now())[counter] += 1;
  }

  sampleDepth(depth: number): void {
    const bucket = this.bucket(this.now());
    bucket.depth = Math.max(bucket.depth ?? 0, depth);
  }

  private bucket(at: number): MinuteBucket {
    const minute = Math.floor(at / MINUTE_MS);
    let bucket = this.buckets.get(minute);
    if (!bucket) {
      bucket = { minute, accepted: 0, delivered: 0, deferred: 0, failed: 0, depth: null };
      this.buckets.set(minute, bucket);
      // Forget what is older than the day the charts show.
      for (const key of this.buckets.keys()) if (key <= minute - DAY_MINUTES) this.buckets.delete(key);
    }
    return bucket;
  }

  /** The last `minutes` minutes, oldest first, with empty minutes filled in. */
  series(minutes = DAY_MINUTES): MinuteBucket[] {
    const last = Math.floor(this.now() / MINUTE_MS);
    const out: MinuteBucket[] = [];
    for (let m = last - minutes + 1; m <= last; m += 1) out.push(this.buckets.get(m) ?? { minute: m, accepted: 0, delivered: 0, deferred: 0, failed: 0, depth: null });
    return out;
  }

  /** Totals over the last `minutes` minutes. */
  totals(minutes: number): { accepted: number; delivered: number; deferred: number; failed: number } {
    const sum = { accepted: 0, delivered: 0, deferred: 0, failed: 0 };
    for (const b of this.series(minutes)) {
      sum.accepted += b.accepted;
      sum.delivered += b.delivered;
      sum.deferred += b.deferred;
      sum.failed += b.failed;
    }
    return sum;
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
