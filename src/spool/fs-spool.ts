/**
 * Postfix-style file spool. Layout under spool.dir:
 *   tmp/      messages being received (never acknowledged; removed at start)
 *   queue/    ID.eml (the message) + ID.json (envelope and delivery state); ID.json is the commit marker
 *   failed/   messages that finally failed, with the reason in ID.json
 *   corrupt/  records that could not be read, kept for a person to inspect
 *
 * Durability (DESIGN.md "250 means"): the message file is fsynced, renamed into queue/, its record
 * is fsynced and renamed after it, and queue/ is fsynced, all before commit() resolves.
 */
import * as fsp from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { DirSyncer } from './dir-sync.js';
import { parseEntry, serializeEntry, type SpoolEntry } from './entry.js';
import { isQueueId } from './queue-id.js';
import type { MessageWriter, NewMessage, RecoveryReport, Spool } from './spool.js';

/** The file-system calls the spool makes; tests replace one to force a failure on the durable path. */
export interface SpoolFs {
  open: typeof fsp.open;
  rename: typeof fsp.rename;
  link: typeof fsp.link;
  unlink: typeof fsp.unlink;
  readdir: typeof fsp.readdir;
  readFile: typeof fsp.readFile;
  mkdir: typeof fsp.mkdir;
}

export const realSpoolFs: SpoolFs = {
  open: fsp.open,
  rename: fsp.rename,
  link: fsp.link,
  unlink: fsp.unlink,
  readdir: fsp.readdir,
  readFile: fsp.readFile,
  mkdir: fsp.mkdir,
};

type Area = 'tmp' | 'queue' | 'failed' | 'corrupt';

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export class FsSpool implements Spool {
  private readonly syncers: Record<'queue' | 'failed', DirSyncer>;
  private tmpCounter = 0;

  constructor(
    readonly root: string,
    private readonly fs: SpoolFs = realSpoolFs,
  ) {
    const openDir = (dir: string) => this.fs.open(dir, 'r');
    this.syncers = { queue: new DirSyncer(this.dir('queue'), openDir), failed: new DirSyncer(this.dir('failed'), openDir) };
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
  private async writeDurable(file: string, content: string): Promise<void> {
    const handle = await this.fs.open(file, 'wx', 0o600);
    try {
      await handle.writeFile(content);
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

  async recover(): Promise<RecoveryReport> {
    for (const area of ['tmp', 'queue', 'failed', 'corrupt'] as const) {
      await this.fs.mkdir(this.dir(area), { recursive: true, mode: 0o700 });
    }
    const report: RecoveryReport = { queued: [], discardedPartial: 0, quarantined: [], completedMoves: 0 };

    for (const name of await this.fs.readdir(this.dir('tmp'))) {
      await this.unlinkQuietly(path.join(this.dir('tmp'), name));
      report.discardedPartial += 1;
    }

    const failedIds = new Set((await this.fs.readdir(this.dir('failed'))).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    const names = new Set(await this.fs.readdir(this.dir('queue')));
    for (const name of [...names].sort()) {
      const [id, ext] = name.split('.') as [string, string | undefined];
      if (ext === 'eml') {
        // A message without its record was never acknowledged (or was already delivered): drop it.
        if (!names.has(`${id}.json`)) {
          await this.unlinkQuietly(path.join(this.dir('queue'), name));
          report.discardedPartial += 1;
        }
        continue;
      }
      if (ext !== 'json' || !isQueueId(id)) {
        await this.quarantine(name, 'unexpected file in queue/', report);
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
        await this.quarantine(name, entry.message, report);
        if (names.has(`${id}.eml`)) await this.quarantine(`${id}.eml`, entry.message, null);
        continue;
      }
      if (!names.has(`${id}.eml`)) {
        await this.quarantine(name, 'record without its message file', report);
        continue;
      }
      report.queued.push(entry);
    }
    return report;
  }

  private async quarantine(name: string, reason: string, report: RecoveryReport | null): Promise<void> {
    await this.fs.rename(path.join(this.dir('queue'), name), path.join(this.dir('corrupt'), name));
    report?.quarantined.push({ id: name.split('.')[0] ?? name, reason });
  }

  async beginMessage(id: string): Promise<MessageWriter> {
    const tmpFile = this.file('tmp', id, 'eml');
    const handle = await this.fs.open(tmpFile, 'wx', 0o600);
    let size = 0;
    let closed = false;
    let renamed = false;
    const close = async () => {
      if (!closed) {
        closed = true;
        await handle.close();
      }
    };
    return {
      id,
      write: async (chunk: Buffer) => {
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
          offset += bytesWritten;
        }
        size += chunk.length;
      },
      commit: async (meta: NewMessage) => {
        const entry: SpoolEntry = { version: 1, ...meta, id, size, attempts: 0, nextAttemptAt: meta.receivedAt, held: false };
        // The message file and its record are flushed in parallel (two fsyncs, one wait); then the
        // message is renamed into queue/ before its record, which is the commit marker, and queue/ is
        // fsynced (shared with concurrent commits). fdatasync suffices: a new file's size is data.
        const recordTmp = path.join(this.dir('tmp'), `${id}.json.${process.pid}.${this.tmpCounter++}`);
        try {
          await Promise.all([
            (async () => {
              await handle.datasync();
              await close();
            })(),
            this.writeDurable(recordTmp, serializeEntry(entry)),
          ]);
          await this.fs.rename(tmpFile, this.file('queue', id, 'eml'));
          renamed = true;
          await this.fs.rename(recordTmp, this.file('queue', id, 'json'));
        } catch (err) {
          await this.unlinkQuietly(recordTmp);
          throw err;
        }
        await this.syncers.queue.sync();
        return entry;
      },
      abort: async () => {
        await close().catch(() => undefined);
        await this.unlinkQuietly(tmpFile);
        if (renamed) {
          await this.unlinkQuietly(this.file('queue', id, 'json'));
          await this.unlinkQuietly(this.file('queue', id, 'eml'));
        }
      },
    };
  }

  readMessage(id: string): Promise<Buffer> {
    return this.fs.readFile(this.file('queue', id, 'eml'));
  }

  messagePath(id: string, where: 'queue' | 'failed' = 'queue'): string {
    return this.file(where, id, 'eml');
  }

  openMessage(id: string): Readable {
    return createReadStream(this.file('queue', id, 'eml'));
  }

  async get(id: string, where: 'queue' | 'failed' = 'queue'): Promise<SpoolEntry | null> {
    if (!isQueueId(id)) return null;
    try {
      const entry = parseEntry(await this.fs.readFile(this.file(where, id, 'json'), 'utf8'));
      return entry instanceof Error ? null : entry;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async list(where: 'queue' | 'failed'): Promise<SpoolEntry[]> {
    const names = (await this.fs.readdir(this.dir(where))).filter((n) => n.endsWith('.json')).sort();
    const entries: SpoolEntry[] = [];
    for (const name of names) {
      const entry = await this.get(name.slice(0, -5), where);
      if (entry) entries.push(entry);
    }
    return entries;
  }

  async count(where: 'queue' | 'failed'): Promise<number> {
    return (await this.fs.readdir(this.dir(where))).filter((n) => n.endsWith('.json')).length;
  }

  async update(entry: SpoolEntry): Promise<void> {
    // State changes need not wait for a directory fsync: losing one after a crash only repeats an attempt.
    await this.writeRecord('queue', entry, { syncDir: false });
  }

  async remove(id: string): Promise<void> {
    // Record first: a message file left without its record is dropped at the next start.
    await this.unlinkQuietly(this.file('queue', id, 'json'));
    await this.unlinkQuietly(this.file('queue', id, 'eml'));
  }

  async moveToFailed(entry: SpoolEntry): Promise<void> {
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
    await this.unlinkQuietly(this.file('failed', id, 'json'));
    await this.unlinkQuietly(this.file('failed', id, 'eml'));
  }
}
