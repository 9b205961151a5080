/**
 * Postfix-style file spool. Layout under spool.dir:
 *   journal/  small messages just acknowledged, not yet filed into queue/ (journal.ts)
 *   tmp/      messages being received (never acknowledged; removed at start)
 *   queue/    ID.eml (the message) + ID.json (envelope and delivery state); ID.json is the commit marker
 *   failed/   messages that finally failed, with the reason in ID.json
 *   corrupt/  records that could not be read, kept for a person to inspect
 *
 * Durability (DESIGN.md "250 means"), before commit() resolves: either the message and its record
 * are in a flushed journal record (messages up to journalMessageBytes, group-committed), or the
 * message file is fsynced, renamed into queue/, its record fsynced and renamed after it, and queue/
 * fsynced. Journaled messages are filed into queue/ the same way after the 250, in the background
 * (filer.ts), and read from the journal until then.
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';
import { DirSyncer } from './dir-sync.js';
import { realSpoolFs, type SpoolFs } from './spool-fs.js';
import { parseEntry, serializeEntry, type SpoolEntry } from '../entry.js';
import { JournalFiler } from './filer.js';
import { decodeRecords, IntakeJournal, type Segment } from './journal.js';
import { isQueueId } from '../queue-id.js';
import type { ClaimLimits, Lease, MessageWriter, NewMessage, RecoveryReport, Settlement, Spool } from '../spool.js';
import { LocalLeases } from '../local-leases.js';
import { lockSpoolDir, type SpoolLock } from '../lock/spool-lock.js';

type Area = 'journal' | 'tmp' | 'queue' | 'failed' | 'corrupt';

/** A journal segment found at start, with what recovery found of each of its messages. */
interface AdoptedSegment {
  file: string;
  /** Acknowledged, not in queue/ or failed/: to be filed. */
  unfiled: Array<{ entry: SpoolEntry; offset: number; length: number }>;
  /** Already in queue/ or failed/. */
  known: string[];
  /** Delivered or failed while the segment existed (queue/ID.done). */
  delivered: string[];
}

export interface FsSpoolOptions {
  /** Group commit through the intake journal (on unless false). Off: each message gets its own fsyncs before the 250. */
  journal?: boolean;
  /**
   * Messages up to this size are held in memory during DATA and journaled. 256 KiB covers alerts
   * and most scans, and stays far below the ~3 MB single-request limit, so the large-message path
   * (which reads byte ranges through messagePath) only ever sees messages filed directly.
   */
  journalMessageBytes?: number;
  /** Acknowledged bytes in the journal waiting to be filed; above this intake files directly (bounds journal/). */
  journalBacklogBytes?: number;
  /** Reports background problems (filing retried, a journal segment not deleted); the spool keeps going. */
  onError?: (event: string, err: Error) => void;
  /** Reports what recovery found that a person should know (a lock left by a relay that did not stop cleanly). */
  onNotice?: (event: string, fields: Record<string, unknown>) => void;
  /**
   * Takes the spool.dir lock in recover() (on unless false), released by close(). Off only where a
   * test stands in for a crashed process, whose lock the kernel would have released.
   */
  lock?: boolean;
  now?: () => number;
}

/** Every name the spool writes, per area (ID: a queue id, queue-id.ts); recovery moves any other to corrupt/. */
const ID = '([0-9A-Z]{19})';
const KNOWN_NAMES = {
  queue: new RegExp(`^${ID}\\.(eml|json|done)$`),
  failed: new RegExp(`^${ID}\\.(eml|json)$`),
  journal: new RegExp(`^${ID}\\.log$`),
  // A message being received; a record being written (ID.json.PID.N); the readiness probe.
  tmp: new RegExp(`^(?:${ID}\\.eml|${ID}\\.json\\.\\d+\\.\\d+|\\.probe\\.\\d+\\.\\d+)$`),
} as const;

const DEFAULT_JOURNAL_MESSAGE_BYTES = 256 * 1024;
// Filing reads messages back from the journal, so the backlog costs disk, not memory. A burst of
// 5,000 10 KB alerts is 50 MB; at 32 MB the last third of such a burst took the slow direct path
// (2,270 -> 1,600 msg/s over reused connections, bench/README.md).
const DEFAULT_JOURNAL_BACKLOG_BYTES = 256 * 1024 * 1024;
// One filing at a time: filing competes with intake for the disk and the two cores; measured with
// smtp-source (8 sessions, 10 KB, before filing yielded to flushes), 1 gave ~1,650 msg/s over
// reused connections, 2 ~1,150, 4 ~1,050.
const FILING_CONCURRENCY = 1;
// Filing waits for intake to be idle (nothing appended or flushed for 5 ms), at most 10 ms per
// message, so a burst is acknowledged first and filed after, yet filing never stops: at least
// ~100 messages/s under saturation, above one mailbox's Graph limit (40/s). Waiting only for the
// flush in progress let filing run between every two flushes. Same session, alternating builds,
// smtp-source 8 sessions x 10,000 x 10 KB over reused connections: 2,649-2,956 -> 2,969-3,076
// msg/s (bench/README.md, session 3); one per connection within the noise.
const FILING_YIELD_MS = 10;
const INTAKE_IDLE_MS = 5;
// A filing that fails (disk full) is retried; the message is safe in the journal meanwhile.
const FILING_RETRY_MS = [100, 1000, 5000, 30_000] as const;

/** Writes all of `data` (a write may take only part of it). */
async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  let written = 0;
  while (written < data.length) written += (await handle.write(data, written, data.length - written)).bytesWritten;
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export class FsSpool implements Spool {
  private readonly syncers: Record<'queue' | 'failed' | 'journal', DirSyncer>;
  private tmpCounter = 0;
  private readonly journal: IntakeJournal | null;
  private readonly journalMessageBytes: number;
  private readonly journalBacklogBytes: number;
  private readonly onError: (event: string, err: Error) => void;
  /** Files journaled messages into queue/ in the background; null without the journal. */
  private readonly filer: JournalFiler | null;
  /** Claims for delivery: one process owns a file spool, so they live in memory. */
  private readonly leases: LocalLeases;
  private readonly takeLock: boolean;
  private readonly onNotice: (event: string, fields: Record<string, unknown>) => void;
  private lock: SpoolLock | null = null;

  constructor(
    readonly root: string,
    private readonly fs: SpoolFs = realSpoolFs,
    options: FsSpoolOptions = {},
  ) {
    const openDir = (dir: string) => this.fs.open(dir, 'r');
    this.syncers = { queue: new DirSyncer(this.dir('queue'), openDir), failed: new DirSyncer(this.dir('failed'), openDir), journal: new DirSyncer(this.dir('journal'), openDir) };
    this.journalMessageBytes = options.journalMessageBytes ?? DEFAULT_JOURNAL_MESSAGE_BYTES;
    this.journalBacklogBytes = options.journalBacklogBytes ?? DEFAULT_JOURNAL_BACKLOG_BYTES;
    this.onError = options.onError ?? (() => undefined);
    this.leases = new LocalLeases(this, options.now ?? Date.now);
    this.onNotice = options.onNotice ?? (() => undefined);
    this.takeLock = options.lock ?? true;
    this.journal =
      options.journal === false
        ? null
        : new IntakeJournal(this.dir('journal'), this.fs, this.syncers.journal, {
            // Sealed at 4 MB or after 50 ms, so a segment is deleted soon after its messages are
            // filed; until then a delivered message leaves a .done marker (see remove()).
            maxSegmentBytes: 4 * 1024 * 1024,
            maxSegmentAgeMs: 50,
            idleMs: INTAKE_IDLE_MS,
            now: options.now ?? Date.now,
            onError: this.onError,
          });
    this.filer = this.journal
      ? new JournalFiler(this.journal, (entry, body, onRecordRenamed) => this.fileIntoQueue(entry, async () => this.writeDurable(this.file('tmp', entry.id, 'eml'), await body()), onRecordRenamed), {
          concurrency: FILING_CONCURRENCY,
          yieldMs: FILING_YIELD_MS,
          retryMs: FILING_RETRY_MS,
          onError: this.onError,
        })
      : null;
  }

  dir(area: Area): string {
    return path.join(this.root, area);
  }

  private file(area: Area, id: string, ext: 'eml' | 'json'): string {
    return path.join(this.dir(area), `${id}.${ext}`);
  }

  private async unlinkQuietly(file: string): Promise<void> {
    try {
      await this.fs.unlink(file);
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }

  /** Creates a file with this content and flushes it to disk. */
  private async writeDurable(file: string, content: string | Buffer): Promise<void> {
    const handle = await this.fs.open(file, 'wx', 0o600);
    try {
      await writeAll(handle, typeof content === 'string' ? Buffer.from(content) : content);
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }

  /** Writes a record atomically: tmp file, fsync, rename over the target. */
  private async writeRecord(area: 'queue' | 'failed', entry: SpoolEntry, options: { syncDir: boolean }): Promise<void> {
    const tmp = path.join(this.dir('tmp'), `${entry.id}.json.${process.pid}.${this.tmpCounter++}`);
    await this.writeDurable(tmp, serializeEntry(entry));
    try {
      await this.fs.rename(tmp, this.file(area, entry.id, 'json'));
    } catch (err) {
      await this.unlinkQuietly(tmp);
      throw err;
    }
    if (options.syncDir) await this.syncers[area].sync();
  }

  /**
   * Files a message into queue/. `flushMessage` writes (or flushes) tmp/ID.eml; the record is
   * written and flushed in parallel (two fsyncs, one wait). Then the message is renamed into queue/
   * before its record, which is the commit marker, and queue/ is fsynced (shared with concurrent
   * commits). fdatasync suffices: a new file's size is data. On failure nothing stays in queue/.
   */
  private async fileIntoQueue(entry: SpoolEntry, flushMessage: () => Promise<void>, onRecordRenamed?: () => void): Promise<void> {
    const recordTmp = path.join(this.dir('tmp'), `${entry.id}.json.${process.pid}.${this.tmpCounter++}`);
    let renamed = false;
    try {
      // allSettled: on a failure the other write must have finished before the cleanup below runs.
      const flushed = await Promise.allSettled([flushMessage(), this.writeDurable(recordTmp, serializeEntry(entry))]);
      for (const result of flushed) if (result.status === 'rejected') throw result.reason;
      await this.fs.rename(this.file('tmp', entry.id, 'eml'), this.file('queue', entry.id, 'eml'));
      renamed = true;
      await this.fs.rename(recordTmp, this.file('queue', entry.id, 'json'));
      onRecordRenamed?.();
      await this.syncers.queue.sync();
    } catch (err) {
      await this.unlinkQuietly(recordTmp);
      await this.unlinkQuietly(this.file('tmp', entry.id, 'eml'));
      if (renamed) {
        await this.unlinkQuietly(this.file('queue', entry.id, 'json'));
        await this.unlinkQuietly(this.file('queue', entry.id, 'eml'));
      }
      throw err;
    }
  }

  async recover(): Promise<RecoveryReport> {
    // Before anything in spool.dir is read or changed: a second relay must not run recovery
    // against a live spool (it deleted the first one's tmp/ files and retired its journal).
    if (this.takeLock) {
      this.lock = await lockSpoolDir(this.root);
      if (this.lock.previousPid !== null) this.onNotice('spool.lock_taken_over', { previousPid: this.lock.previousPid, dir: this.root });
    }
    for (const area of ['journal', 'tmp', 'queue', 'failed', 'corrupt'] as const) {
      await this.fs.mkdir(this.dir(area), { recursive: true, mode: 0o700 });
    }
    const report: RecoveryReport = { queued: [], discardedPartial: 0, quarantined: [], completedMoves: 0, replayed: 0 };

    // Only files of a name this spool writes are read, deleted or filed; anything else (an
    // operator's ID.json.bak, an editor's swap file) goes to corrupt/, where a person looks: it
    // stopped the start (ENOENT) or was deleted as a partial message (issue 11, item 10).
    for (const area of ['tmp', 'journal', 'failed'] as const) await this.quarantineUnknown(area, report);
    for (const name of await this.fs.readdir(this.dir('tmp'))) {
      await this.unlinkQuietly(path.join(this.dir('tmp'), name));
      report.discardedPartial += 1;
    }
    const adopted = await this.replayJournal(report);
    const markersStillNeeded = new Set(adopted.flatMap((a) => a.delivered));

    const failedIds = new Set((await this.fs.readdir(this.dir('failed'))).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    const names = new Set(await this.fs.readdir(this.dir('queue')));
    for (const name of [...names].sort()) {
      const known = KNOWN_NAMES.queue.exec(name);
      if (!known) {
        await this.quarantine('queue', name, 'not a name the spool writes (ID.eml, ID.json, ID.done)', report);
        continue;
      }
      const [, id, ext] = known as unknown as [string, string, string];
      if (ext === 'eml') {
        // A message without its record was never acknowledged (or was already delivered): drop it.
        if (!names.has(`${id}.json`)) {
          await this.unlinkQuietly(path.join(this.dir('queue'), name));
          report.discardedPartial += 1;
        }
        continue;
      }
      if (ext === 'done') {
        // Delivered (or failed) while its journal segment existed. Kept while that segment is
        // (adopted below), dropped once the journal no longer holds the message.
        if (!markersStillNeeded.has(id)) await this.unlinkQuietly(path.join(this.dir('queue'), name));
        continue;
      }
      const entry = parseEntry(await this.fs.readFile(this.file('queue', id, 'json'), 'utf8'));
      if (failedIds.has(id) && !(entry instanceof Error) && entry.requeuedAt !== undefined) {
        // A "queue retry" was interrupted after the queue record was written: finish it.
        await this.deleteFailed(id);
        report.completedMoves += 1;
      } else if (failedIds.has(id)) {
        // A move to failed/ was interrupted after the failed record was written: finish it.
        await this.remove(id);
        report.completedMoves += 1;
        continue;
      }
      if (entry instanceof Error) {
        await this.quarantine('queue', name, entry.message, report);
        if (names.has(`${id}.eml`)) await this.quarantine('queue', `${id}.eml`, entry.message, null);
        continue;
      }
      if (!names.has(`${id}.eml`)) {
        await this.quarantine('queue', name, 'record without its message file', report);
        continue;
      }
      report.queued.push(entry);
    }
    // Only now, after the scan of queue/ (which must not see a filing half done), filing starts.
    for (const segment of adopted) report.queued.push(...(await this.adopt(segment)));
    report.queued.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return report;
  }

  /**
   * What a stop left in the journal: acknowledged messages not yet in queue/ or failed/. Those
   * already filed, failed or delivered (queue/ID.done) are skipped: a segment is only deleted once
   * all its messages are filed or delivered, and until then a removal leaves that marker.
   * A segment with messages to file is returned, to be adopted once queue/ has been scanned (the
   * relay starts at once and files them in the background); one with nothing to file is deleted.
   * Without the journal (spool.journal: false), or for a segment with an unreadable record (moved
   * to corrupt/ afterwards), the messages are filed here, before the start.
   */
  private async replayJournal(report: RecoveryReport): Promise<AdoptedSegment[]> {
    const adopted: AdoptedSegment[] = [];
    const names = (await this.fs.readdir(this.dir('journal'))).sort();
    if (names.length === 0) return adopted;
    // One listing each instead of three lookups per record (a 10,000-message backlog took ~2 s).
    const inQueue = new Set(await this.fs.readdir(this.dir('queue')));
    const inFailed = new Set(await this.fs.readdir(this.dir('failed')));
    let deleted = false;
    for (const name of names) {
      const file = path.join(this.dir('journal'), name);
      const { records, tornBytes, corrupt, untrusted } = decodeRecords(await this.fs.readFile(file));
      // A torn tail is a flush that never completed: nothing in it was acknowledged.
      if (tornBytes > 0) report.discardedPartial += 1;
      const segment: AdoptedSegment = { file, unfiled: [], known: [], delivered: [] };
      const unfiledBodies: Buffer[] = [];
      // Damage is not a tear: what verifies is filed below, the segment goes to corrupt/.
      let unreadable = corrupt.length > 0;
      if (unreadable) {
        const ranges = corrupt.map((c) => `${c.bytes} bytes at ${c.offset}`).join(', ');
        const unsure = untrusted > 0 ? `; ${untrusted} more that verify were found only by searching past the damage (they could be bytes inside a message) and are not filed: check them by hand` : '';
        report.quarantined.push({ id: name, area: 'journal', reason: `journal segment damaged (${ranges} failed the checksum; acknowledged messages there are lost): the ${records.length} records that verify are filed${unsure}; the segment is kept in corrupt/` });
      }
      for (const record of records) {
        const entry = parseEntry(record.meta.toString('utf8'));
        if (entry instanceof Error) {
          unreadable = true;
          report.quarantined.push({ id: name, area: 'journal', reason: `journal record: ${entry.message}` });
          continue;
        }
        const json = `${entry.id}.json`;
        if (inQueue.has(`${entry.id}.done`)) segment.delivered.push(entry.id);
        else if (inQueue.has(json) || inFailed.has(json)) segment.known.push(entry.id);
        else {
          segment.unfiled.push({ entry, offset: record.bodyOffset, length: record.body.length });
          unfiledBodies.push(record.body);
          report.replayed += 1;
        }
      }
      if (segment.unfiled.length > 0 && this.filer && !unreadable) {
        adopted.push(segment);
        continue;
      }
      for (const [i, { entry }] of segment.unfiled.entries()) {
        await this.fileIntoQueue(entry, () => this.writeDurable(this.file('tmp', entry.id, 'eml'), unfiledBodies[i] as Buffer));
      }
      if (unreadable) await this.fs.rename(file, path.join(this.dir('corrupt'), name));
      else await this.unlinkQuietly(file);
      deleted = true;
    }
    if (deleted) await this.syncers.journal.sync();
    return adopted;
  }

  /** Hands a recovered segment's unfiled messages to the filer; returns them (they are queued). */
  private async adopt(recovered: AdoptedSegment): Promise<SpoolEntry[]> {
    const filer = this.filer as JournalFiler;
    const segment = await (this.journal as IntakeJournal).adopt(recovered.file, recovered.unfiled.length);
    for (const id of recovered.known) filer.track(id, segment);
    for (const id of recovered.delivered) {
      filer.track(id, segment);
      this.dropDoneMarkerWhenRetired(id, segment);
    }
    for (const { entry, offset, length } of recovered.unfiled) filer.add(entry, { segment, offset, length });
    return recovered.unfiled.map((u) => ({ ...u.entry }));
  }

  /** Moves a file to corrupt/ (under a new name if corrupt/ already has one: nothing there is overwritten). */
  private async quarantine(area: 'tmp' | 'journal' | 'queue' | 'failed', name: string, reason: string, report: RecoveryReport | null): Promise<void> {
    const taken = new Set(await this.fs.readdir(this.dir('corrupt')));
    let target = name;
    for (let n = 1; taken.has(target); n++) target = `${name}.${n}`;
    await this.fs.rename(path.join(this.dir(area), name), path.join(this.dir('corrupt'), target));
    report?.quarantined.push({ id: KNOWN_NAMES.queue.exec(name)?.[1] ?? `${area}/${name}`, area, reason: target === name ? reason : `${reason} (kept as corrupt/${target})` });
  }

  private async quarantineUnknown(area: 'tmp' | 'journal' | 'failed', report: RecoveryReport): Promise<void> {
    for (const name of (await this.fs.readdir(this.dir(area))).sort()) {
      if (!KNOWN_NAMES[area].test(name)) await this.quarantine(area, name, `not a name the spool writes in ${area}/`, report);
    }
  }

  async beginMessage(id: string): Promise<MessageWriter> {
    const tmpFile = this.file('tmp', id, 'eml');
    const journal = this.journal;
    // Held in memory while the message is small enough to be journaled; spilled to tmp/ otherwise.
    let held: Buffer[] = [];
    let handle: FileHandle | null = null;
    let size = 0;
    let closed = false;
    const spill = async (): Promise<FileHandle> => {
      const file = await this.fs.open(tmpFile, 'wx', 0o600);
      handle = file;
      for (const chunk of held) await writeAll(file, chunk);
      held = [];
      return file;
    };
    const close = async () => {
      if (handle && !closed) {
        closed = true;
        await handle.close();
      }
    };
    return {
      id,
      write: async (chunk: Buffer) => {
        if (journal && !handle && size + chunk.length <= this.journalMessageBytes) {
          held.push(chunk);
          size += chunk.length;
          return;
        }
        await writeAll(handle ?? (await spill()), chunk);
        size += chunk.length;
      },
      commit: async (meta: NewMessage) => {
        const entry: SpoolEntry = { version: 1, ...meta, id, size, attempts: 0, nextAttemptAt: meta.receivedAt, held: false };
        const filer = this.filer;
        if (journal && filer && !handle && filer.backlog + size <= this.journalBacklogBytes) {
          const body = Buffer.concat(held, size);
          held = [];
          filer.add(entry, await journal.append(Buffer.from(JSON.stringify(entry)), body));
          return entry;
        }
        const file = handle ?? (await spill());
        await this.fileIntoQueue(entry, async () => {
          await file.datasync();
          await close();
        });
        return entry;
      },
      abort: async () => {
        held = [];
        await close().catch(() => undefined);
        await this.unlinkQuietly(tmpFile);
      },
    };
  }

  /** Waits until a journaled message is filed into queue/ (at once for everything else). */
  private async filed(id: string): Promise<void> {
    await this.filer?.filed(id);
  }

  /** Lets background filing finish (up to the deadline), then closes the journal. */
  async close(deadlineMs = 5000): Promise<void> {
    try {
      await this.filer?.stop(deadlineMs);
      await this.journal?.close();
    } finally {
      this.lock?.release();
      this.lock = null;
    }
  }

  async readMessage(id: string): Promise<Buffer> {
    const fromJournal = this.filer?.readUnfiled(id);
    if (fromJournal) {
      try {
        return await fromJournal;
      } catch {
        // Filed (and its segment closed) meanwhile: read the filed copy below.
      }
    }
    await this.filed(id);
    return this.fs.readFile(this.file('queue', id, 'eml'));
  }

  async withMessageFile<T>(id: string, where: 'queue' | 'failed', use: (file: string) => Promise<T>): Promise<T> {
    // Byte-range readers need the filed copy: a message still in the journal is filed first.
    if (where === 'queue') await this.filed(id);
    return use(this.file(where, id, 'eml'));
  }

  openMessage(id: string): Readable {
    const file = this.file('queue', id, 'eml');
    if (!this.filer?.isUnfiled(id)) return createReadStream(file);
    const filed = this.filed(id);
    return Readable.from(
      (async function* () {
        await filed;
        yield* createReadStream(file);
      })(),
    );
  }

  async get(id: string, where: 'queue' | 'failed' = 'queue'): Promise<SpoolEntry | null> {
    if (!isQueueId(id)) return null;
    // Nothing changes a message's state before it is filed: the accepted record is current.
    const unfiled = where === 'queue' ? this.filer?.unfiledEntry(id) : undefined;
    if (unfiled) return unfiled;
    try {
      const entry = parseEntry(await this.fs.readFile(this.file(where, id, 'json'), 'utf8'));
      return entry instanceof Error ? null : entry;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async list(where: 'queue' | 'failed'): Promise<SpoolEntry[]> {
    // Messages still in the journal are listed too (without waiting for a burst to be filed).
    const entries: SpoolEntry[] = where === 'queue' ? (this.filer?.unfiledEntries() ?? []) : [];
    const listed = new Set(entries.map((e) => e.id));
    const names = (await this.fs.readdir(this.dir(where))).filter((n) => n.endsWith('.json') && !listed.has(n.slice(0, -5)));
    for (const name of names) {
      const entry = await this.get(name.slice(0, -5), where);
      if (entry) entries.push(entry);
    }
    return entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async count(where: 'queue' | 'failed'): Promise<number> {
    const files = (await this.fs.readdir(this.dir(where))).filter((n) => n.endsWith('.json')).length;
    return where === 'queue' ? files + (this.filer?.unfiledCount ?? 0) : files;
  }

  async update(entry: SpoolEntry): Promise<void> {
    await this.filed(entry.id);
    // State changes need not wait for a directory fsync: losing one after a crash only repeats an attempt.
    await this.writeRecord('queue', entry, { syncDir: false });
  }

  async remove(id: string): Promise<void> {
    const unfiledSegment = this.filer?.location(id) ? this.filer.segment(id) : undefined;
    if (unfiledSegment) {
      // Delivered before it was filed: it is never filed. The marker is written first, so a
      // restart that finds the message in the journal skips it.
      await (await this.fs.open(this.doneMarker(id), 'w', 0o600)).close();
      this.dropDoneMarkerWhenRetired(id, unfiledSegment);
      if (this.filer?.cancel(id)) return;
      // Its filing started meanwhile: it is removed below like any filed message.
    }
    await this.filed(id);
    const segment = this.filer?.segment(id);
    if (segment) {
      // Its journal segment still holds the message, and a restart files whatever the journal
      // holds unless queue/ has a trace of it: the record becomes ID.done (one atomic rename)
      // until the segment is deleted. Waiting for the segment instead kept delivered messages in
      // queue/ for as long as filing lagged intake, and a crash then sent them again (16 of 151 in
      // the SIGKILL test under load).
      try {
        await this.fs.rename(this.file('queue', id, 'json'), this.doneMarker(id));
      } catch (err) {
        if (!isMissing(err)) throw err; // already removed (a delete raced a delivery): nothing to mark
      }
      await this.unlinkQuietly(this.file('queue', id, 'eml'));
      this.dropDoneMarkerWhenRetired(id, segment);
      return;
    }
    // Record first: a message file left without its record is dropped at the next start.
    await this.unlinkQuietly(this.file('queue', id, 'json'));
    await this.unlinkQuietly(this.file('queue', id, 'eml'));
  }

  /** The marker is needed only while the journal segment exists (recovery keeps it while it does, then drops it). */
  private dropDoneMarkerWhenRetired(id: string, segment: Segment): void {
    void segment.retired.then(() => this.unlinkQuietly(this.doneMarker(id))).catch(() => undefined);
  }

  private doneMarker(id: string): string {
    return path.join(this.dir('queue'), `${id}.done`);
  }

  async moveToFailed(entry: SpoolEntry): Promise<void> {
    await this.filed(entry.id);
    try {
      await this.fs.link(this.file('queue', entry.id, 'eml'), this.file('failed', entry.id, 'eml'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    await this.writeRecord('failed', entry, { syncDir: true });
    await this.remove(entry.id);
  }

  async requeueFailed(entry: SpoolEntry): Promise<void> {
    try {
      await this.fs.link(this.file('failed', entry.id, 'eml'), this.file('queue', entry.id, 'eml'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // requeuedAt tells recovery which way an interrupted move was going.
    await this.writeRecord('queue', { ...entry, requeuedAt: entry.requeuedAt ?? Date.now() }, { syncDir: true });
    await this.deleteFailed(entry.id);
  }

  async probeWritable(): Promise<void> {
    const probe = path.join(this.dir('tmp'), `.probe.${process.pid}.${this.tmpCounter++}`);
    const handle = await this.fs.open(probe, 'wx', 0o600);
    try {
      await handle.writeFile('ok');
      await handle.sync();
    } finally {
      await handle.close();
      await this.unlinkQuietly(probe);
    }
  }

  async deleteFailed(id: string): Promise<void> {
    // A failed message whose journal segment still exists would be filed again at a restart.
    await this.filer?.segment(id)?.retired;
    await this.unlinkQuietly(this.file('failed', id, 'json'));
    await this.unlinkQuietly(this.file('failed', id, 'eml'));
  }

  claim(_node: string, max: number, limits: ClaimLimits, now?: number): Promise<Lease[]> {
    return this.leases.claim(max, limits, now);
  }

  renew(lease: Lease, leaseMs: number): Promise<boolean> {
    return this.leases.renew(lease, leaseMs);
  }

  settle(lease: Lease, outcome: Settlement): Promise<boolean> {
    return this.leases.settle(lease, outcome);
  }

  async pauseMailbox(mailbox: string, untilMs: number): Promise<void> {
    this.leases.pause(mailbox, untilMs);
  }
}
