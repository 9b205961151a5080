/**
 * The background filer: moves acknowledged messages from the intake journal into queue/, one at a
 * time, after the 250 has gone out. It owns what the spool knows about messages that are still
 * only in the journal: their records (listed from memory), where their bytes are (delivery reads
 * them from there), their segment (a removal must leave a marker while it exists), and which of
 * them were delivered before their turn (those are never filed).
 */
import type { SpoolEntry } from '../entry.js';
import type { IntakeJournal, JournalLocation, Segment } from './journal.js';

export interface FilerOptions {
  /** Messages filed at once. */
  concurrency: number;
  /** Each filing first waits for intake to be idle (IntakeJournal.quiet), at most this long (it never stops). */
  yieldMs: number;
  /** Waits between attempts after a failed filing (the last one repeats). */
  retryMs: readonly number[];
  onError: (event: string, err: Error) => void;
}

/** Writes one message (read from the journal) and its record into queue/; `onRecordRenamed` when the record is in place. */
export type FileOne = (entry: SpoolEntry, body: () => Promise<Buffer>, onRecordRenamed: () => void) => Promise<void>;

export class JournalFiler {
  /** Until filed: state changes (update, move, remove) wait for this. */
  private readonly filing = new Map<string, Promise<void>>();
  /** Until the record is in queue/: listed from here. */
  private readonly unfiled = new Map<string, SpoolEntry>();
  /** Until filing starts: delivery reads the bytes from the journal. */
  private readonly locations = new Map<string, JournalLocation>();
  /** Until the segment is deleted: a removal leaves a marker so a restart does not file it again. */
  private readonly segments = new Map<string, Segment>();
  private readonly cancelled = new Set<string>();
  private slots: number;
  private readonly waitingForSlot: Array<() => void> = [];
  private stopping = false;
  private backlogBytes = 0;

  constructor(
    private readonly journal: IntakeJournal,
    private readonly fileOne: FileOne,
    private readonly options: FilerOptions,
  ) {
    this.slots = options.concurrency;
  }

  /** Files an acknowledged message in the background, retrying until it is filed (or the filer stops). */
  add(entry: SpoolEntry, location: JournalLocation): void {
    const { id } = entry;
    const { segment } = location;
    this.backlogBytes += location.length;
    this.unfiled.set(id, entry);
    this.locations.set(id, location);
    this.track(id, segment);
    const done = this.fileWithRetries(entry, location).finally(() => {
      this.backlogBytes -= location.length;
      this.filing.delete(id);
      this.locations.delete(id);
    });
    this.filing.set(id, done);
  }

  /**
   * A message already filed (or failed, or delivered) whose record is in a segment recovery took
   * over: while that segment exists, removing the message must leave a marker (see FsSpool.remove).
   */
  track(id: string, segment: Segment): void {
    this.segments.set(id, segment);
    void segment.retired.then(() => this.segments.delete(id));
  }

  private async fileWithRetries(entry: SpoolEntry, location: JournalLocation): Promise<void> {
    const { id } = entry;
    for (let attempt = 0; ; attempt++) {
      await this.slot();
      try {
        // Stopping: what is not filed yet stays in the journal and is filed at the next start.
        if (this.stopping) return;
        await this.journal.quiet(this.options.yieldMs);
        if (this.cancelled.delete(id)) {
          // Delivered before its turn: nothing to file (its .done marker stands in for it).
          this.journal.settle(location.segment);
          return;
        }
        this.locations.delete(id);
        await this.fileOne(entry, () => this.journal.read(location), () => this.unfiled.delete(id));
        this.journal.settle(location.segment);
        return;
      } catch (err) {
        // The message stays safe in the journal (its segment is kept); filing is tried again.
        this.options.onError('spool.filing_failed', err as Error);
      } finally {
        this.releaseSlot();
      }
      const { retryMs } = this.options;
      await new Promise((r) => setTimeout(r, retryMs[Math.min(attempt, retryMs.length - 1)]));
    }
  }

  private slot(): Promise<void> {
    if (this.slots > 0) {
      this.slots -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waitingForSlot.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.waitingForSlot.shift();
    if (next) next();
    else this.slots += 1;
  }

  /** Bytes acknowledged and not yet filed (they are in the journal, not in memory). */
  get backlog(): number {
    return this.backlogBytes;
  }

  /** Resolves once the message is filed (at once for a message the filer does not hold). */
  async filed(id: string): Promise<void> {
    await this.filing.get(id);
  }

  /** The accepted record of a message not yet in queue/ (nothing changes it before filing). */
  unfiledEntry(id: string): SpoolEntry | undefined {
    const entry = this.unfiled.get(id);
    return entry ? { ...entry } : undefined;
  }

  unfiledEntries(): SpoolEntry[] {
    return [...this.unfiled.values()].map((e) => ({ ...e }));
  }

  get unfiledCount(): number {
    return this.unfiled.size;
  }

  isUnfiled(id: string): boolean {
    return this.unfiled.has(id);
  }

  /** A message whose filing has not started, read from the journal; undefined for any other. */
  readUnfiled(id: string): Promise<Buffer> | undefined {
    const location = this.locations.get(id);
    return location ? this.journal.read(location) : undefined;
  }

  /** Where a message whose filing has not started is in the journal. */
  location(id: string): JournalLocation | undefined {
    return this.locations.get(id);
  }

  /** The journal segment of a message, while that segment exists. */
  segment(id: string): Segment | undefined {
    return this.segments.get(id);
  }

  /**
   * A message delivered (or deleted) before its filing started is never filed; false when the
   * filing has started (the caller then removes the filed message).
   */
  cancel(id: string): boolean {
    if (!this.locations.delete(id)) return false;
    this.cancelled.add(id);
    this.unfiled.delete(id);
    return true;
  }

  /** Lets filing finish (up to the deadline); after that nothing more is filed. */
  async stop(deadlineMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.filing.values()), new Promise((r) => (timer = setTimeout(r, deadlineMs)))]);
    clearTimeout(timer);
    this.stopping = true;
  }
}
