/**
 * The console's figures for a cluster (PostgreSQL spool): this node's counts go to the shared
 * store in a batch every FLUSH_MS (a timer; the SMTP intake path never waits for it), and the
 * overview reads the sum over every node, plus this node's counts not stored yet, so a message it
 * has just accepted shows at once. Writes and reads run one at a time: a read never misses a batch
 * that is on its way to the database, nor counts it twice.
 */
import type { ActivityStore } from '../spool/spool.js';
import { DAY_MINUTES, PendingCounts, seriesFrom, type Activity, type MinuteBucket } from './activity.js';

/**
 * 5 s: the cluster's figures lag a node's own by at most this (a chart of minutes hardly shows
 * it), for one small upsert per node every 5 s (17,280 a day) however much mail flows.
 */
export const FLUSH_MS = 5_000;

export type SeriesScope = 'node' | 'cluster' | 'node-fallback';

export interface ActivitySeries {
  series: MinuteBucket[];
  /** node: this relay's own figures; cluster: every relay's; node-fallback: the shared store could not be read. */
  scope: SeriesScope;
}

export class SharedActivity {
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  /** Reported once per outage: the spool already says when the database is away. */
  private failing = false;

  constructor(
    private readonly store: ActivityStore,
    private readonly activity: Activity & { pending: PendingCounts },
    /** The first failed write of an outage. */
    private readonly onError: (err: Error) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Stores what this node counted since the last batch; on failure it stays pending for the next. */
  flush(): Promise<void> {
    return this.serial(async () => {
      const batch = this.activity.pending.take();
      if (batch.length === 0) return;
      try {
        await this.store.add(batch);
        this.failing = false;
      } catch (err) {
        this.activity.pending.restore(batch);
        if (!this.failing) this.onError(err as Error);
        this.failing = true;
      }
    });
  }

  /** The last day, every node's counts summed; this node's own when the store cannot be read. */
  read(minutes = DAY_MINUTES): Promise<ActivitySeries> {
    return this.serial(async () => {
      const last = this.activity.currentMinute();
      try {
        const stored = await this.store.read(last - minutes + 1);
        return { series: seriesFrom([stored, this.activity.pending.peek()], last, minutes), scope: 'cluster' as const };
      } catch {
        return { series: this.activity.series(minutes), scope: 'node-fallback' as const };
      }
    });
  }

  /** Stops the timer. */
  halt(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Stops the timer and stores what is left (the relay stopping cleanly loses no count). */
  async stop(): Promise<void> {
    this.halt();
    await this.flush();
  }
}
