import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { DirSyncer } from '../../src/spool/fs/dir-sync.js';
import { FsSpool, type FsSpoolOptions } from '../../src/spool/fs/fs-spool.js';
import { realSpoolFs, type SpoolFs } from '../../src/spool/fs/spool-fs.js';
import { decodeRecords, encodeRecord, IntakeJournal } from '../../src/spool/fs/journal.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { NewMessage } from '../../src/spool/spool.js';

let dir: string;
// Every spool a test starts (recover()) is closed afterwards, including those a test abandons to
// stand for a crashed process: their open files would otherwise be closed by the garbage collector.
let recoverCalls: MockInstance<FsSpool['recover']>;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-fsspool-'));
  recoverCalls = vi.spyOn(FsSpool.prototype, 'recover');
});
afterEach(async () => {
  // Some tests make a file-system call hang for ever: a close waiting on it is given up after 200 ms.
  const closing = Promise.all(recoverCalls.mock.contexts.map((spool) => (spool as FsSpool).close(0).catch(() => undefined)));
  await Promise.race([closing, new Promise((r) => setTimeout(r, 200))]);
  recoverCalls.mockRestore();
  await rm(dir, { recursive: true, force: true });
});

function meta(id: string): NewMessage {
  return { id, receivedAt: Date.now(), envelope: { mailFrom: 'a@x.example', rcptTo: ['b@x.example'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: 'relay@x.example', messageId: '<m@x>' };
}

async function store(spool: FsSpool, body = 'Subject: s\r\n\r\nbody\r\n') {
  const id = newQueueId();
  const writer = await spool.beginMessage(id);
  await writer.write(Buffer.from(body));
  return writer.commit(meta(id));
}

// A spool standing for a crashed process holds no lock: the kernel releases it when a process dies.
const CRASHED: FsSpoolOptions = { lock: false };

const list = async (area: string) => (await readdir(path.join(dir, area))).sort();

// Both ways to "250 means durable": the group-committed journal (default) and a file commit per message.
const modes: Array<[string, FsSpoolOptions]> = [
  ['journal', {}],
  ['direct', { journal: false }],
];

describe.each(modes)('file spool (%s)', (_mode, options) => {
  it('commits a message and its record into queue/ and reads them back', async () => {
    const spool = new FsSpool(dir, realSpoolFs, options);
    await spool.recover();
    const entry = await store(spool);
    expect((await spool.list('queue')).map((e) => e.id)).toEqual([entry.id]); // listed at once, filed or not
    await eventually(async () => (await list('queue')).length === 2); // filed in the background
    expect(await list('queue')).toEqual([`${entry.id}.eml`, `${entry.id}.json`]);
    expect(await list('tmp')).toEqual([]);
    expect((await spool.readMessage(entry.id)).toString()).toBe('Subject: s\r\n\r\nbody\r\n');
    expect(entry).toMatchObject({ size: 20, attempts: 0, held: false });
    expect(await spool.get(entry.id)).toEqual(entry);
  });

  it('recovers after a crash: drops partial intake, keeps committed mail, quarantines corrupt records', async () => {
    const spool = new FsSpool(dir, realSpoolFs, options);
    await spool.recover();
    const good = await store(spool);
    await spool.close();
    const orphan = newQueueId();
    await writeFile(path.join(dir, 'tmp', `${newQueueId()}.eml`), 'half written');
    await writeFile(path.join(dir, 'queue', `${orphan}.eml`), 'renamed but never acknowledged');
    const corrupt = newQueueId();
    await writeFile(path.join(dir, 'queue', `${corrupt}.eml`), 'x');
    await writeFile(path.join(dir, 'queue', `${corrupt}.json`), '{"version":1,"id":');
    const lonely = newQueueId();
    await writeFile(path.join(dir, 'queue', `${lonely}.json`), JSON.stringify({ ...good, id: lonely }));

    const report = await new FsSpool(dir).recover();
    expect(report.queued.map((e) => e.id)).toEqual([good.id]);
    expect(report.discardedPartial).toBe(2);
    expect(report.quarantined.map((q) => q.id).sort()).toEqual([corrupt, lonely].sort());
    expect(await list('corrupt')).toEqual([`${corrupt}.eml`, `${corrupt}.json`, `${lonely}.json`].sort());
    expect(await list('queue')).toEqual([`${good.id}.eml`, `${good.id}.json`]);
  });

  it('moves a final failure to failed/ with its reason, and back with queue retry', async () => {
    const spool = new FsSpool(dir, realSpoolFs, options);
    await spool.recover();
    const entry = await store(spool);
    await spool.moveToFailed({ ...entry, failedAt: 1, failReason: 'HTTP 400 ErrorInvalidRecipients' });
    expect(await list('queue')).toEqual([]);
    expect((await spool.list('failed'))[0]).toMatchObject({ id: entry.id, failReason: 'HTTP 400 ErrorInvalidRecipients' });
    await spool.requeueFailed({ ...entry, attempts: 0 });
    expect(await list('failed')).toEqual([]);
    expect((await spool.list('queue')).map((e) => e.id)).toEqual([entry.id]);
    expect((await spool.readMessage(entry.id)).toString()).toContain('body');
  });

  it('finishes a move to failed/ that a crash interrupted', async () => {
    const spool = new FsSpool(dir, realSpoolFs, options);
    await spool.recover();
    const entry = await store(spool);
    await spool.close();
    // Simulate: failed/ record written, queue/ files not yet removed.
    await writeFile(path.join(dir, 'failed', `${entry.id}.json`), JSON.stringify({ ...entry, failReason: 'x', failedAt: 1 }));
    await writeFile(path.join(dir, 'failed', `${entry.id}.eml`), await readFile(path.join(dir, 'queue', `${entry.id}.eml`)));
    const report = await new FsSpool(dir).recover();
    expect(report.completedMoves).toBe(1);
    expect(report.queued).toEqual([]);
    expect(await list('queue')).toEqual([]);
  });

  it('updates delivery state atomically and removes delivered mail', async () => {
    const spool = new FsSpool(dir, realSpoolFs, options);
    await spool.recover();
    const entry = await store(spool);
    await spool.update({ ...entry, attempts: 2, nextAttemptAt: 42, lastError: { at: 1, kind: 'transient', message: 'HTTP 429', requestId: 'r-1' } });
    expect(await spool.get(entry.id)).toMatchObject({ attempts: 2, nextAttemptAt: 42, lastError: { requestId: 'r-1' } });
    await spool.remove(entry.id);
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });
});

describe('file spool, direct commit (spool.journal: false)', () => {
  it('writes nothing into queue/ when an fsync fails, and removes the partial file', async () => {
    const failingFs: SpoolFs = {
      ...realSpoolFs,
      open: (async (file: string, flags?: string, mode?: number) => {
        const handle = await realSpoolFs.open(file, flags, mode);
        if (String(file).endsWith('.eml')) handle.sync = handle.datasync = async () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
        return handle;
      }) as SpoolFs['open'],
    };
    const spool = new FsSpool(dir, failingFs, { journal: false });
    await spool.recover();
    const id = newQueueId();
    const writer = await spool.beginMessage(id);
    await writer.write(Buffer.from('x'));
    await expect(writer.commit(meta(id))).rejects.toThrow(/EIO/);
    await writer.abort();
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });

  it('removes the message again when the record cannot be renamed into place', async () => {
    const failingFs: SpoolFs = {
      ...realSpoolFs,
      rename: (async (from: string, to: string) => {
        if (String(to).endsWith('.json')) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        return realSpoolFs.rename(from, to);
      }) as SpoolFs['rename'],
    };
    const spool = new FsSpool(dir, failingFs, { journal: false });
    await spool.recover();
    const id = newQueueId();
    const writer = await spool.beginMessage(id);
    await writer.write(Buffer.from('x'));
    await expect(writer.commit(meta(id))).rejects.toThrow(/ENOSPC/);
    await writer.abort();
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });
});

/** Wraps the real file system so that one kind of call fails while `failing()` says so. */
function faultyFs(failing: { datasyncOf?: RegExp; renameTo?: RegExp; count?: { journalSyncs: number } }): SpoolFs {
  return {
    ...realSpoolFs,
    open: (async (file: string, flags?: string, mode?: number) => {
      const handle = await realSpoolFs.open(file, flags, mode);
      const name = String(file);
      if (name.endsWith('.log') && failing.count) {
        const datasync = handle.datasync.bind(handle);
        handle.datasync = async () => {
          (failing.count as { journalSyncs: number }).journalSyncs += 1;
          return datasync();
        };
      }
      if (failing.datasyncOf?.test(name)) handle.sync = handle.datasync = async () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
      return handle;
    }) as SpoolFs['open'],
    rename: (async (from: string, to: string) => {
      if (failing.renameTo?.test(String(to))) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return realSpoolFs.rename(from, to);
    }) as SpoolFs['rename'],
  };
}

/** Records recovery would replay (an empty spare segment, created ahead of need, holds none). */
async function journalRecords(): Promise<number> {
  let records = 0;
  for (const name of await list('journal')) {
    // A segment can be deleted between the listing and the read: it then holds nothing.
    const data = await readFile(path.join(dir, 'journal', name)).catch(() => Buffer.alloc(0));
    records += decodeRecords(data).records.length;
  }
  return records;
}

async function eventually(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached within 5 s');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('intake journal', () => {
  it('lets background filing wait while intake is busy, and never longer than its limit', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      let now = 0;
      const journalDir = path.join(dir, 'journal');
      await mkdir(journalDir);
      const journal = new IntakeJournal(journalDir, realSpoolFs, new DirSyncer(journalDir, (d) => realSpoolFs.open(d, 'r')), {
        maxSegmentBytes: 1 << 20,
        maxSegmentAgeMs: 50,
        idleMs: 5,
        monotonicNow: () => now,
        now: Date.now,
        onError: () => undefined,
      });
      await journal.append(Buffer.from('{}'), Buffer.from('one'));
      let idle = false;
      void journal.quiet(1000).then(() => (idle = true));
      now = 3;
      await vi.advanceTimersByTimeAsync(5);
      expect(idle).toBe(false); // 3 ms since the last flush: still busy
      now = 6;
      await vi.advanceTimersByTimeAsync(5);
      expect(idle).toBe(true);

      // A message every 2 ms: filing gets its turn when its limit (10 ms) is up, not before.
      await journal.append(Buffer.from('{}'), Buffer.from('two'));
      let turn = false;
      void journal.quiet(10).then(() => (turn = true));
      for (let step = 0; step < 10 && !turn; step++) {
        now += 2;
        await journal.append(Buffer.from('{}'), Buffer.from('more'));
        await vi.advanceTimersByTimeAsync(5);
      }
      expect(turn).toBe(true);
      expect(now).toBe(16);
      await journal.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('acknowledges concurrent messages with fewer flushes than messages (group commit), then files each', async () => {
    const count = { journalSyncs: 0 };
    const spool = new FsSpool(dir, faultyFs({ count }));
    await spool.recover();
    const entries = await Promise.all(Array.from({ length: 16 }, (_, i) => store(spool, `Subject: ${i}\r\n\r\nbody ${i}\r\n`)));
    expect(count.journalSyncs).toBeGreaterThan(0);
    expect(count.journalSyncs).toBeLessThan(16);
    expect((await spool.list('queue')).map((e) => e.id).sort()).toEqual(entries.map((e) => e.id).sort());
    for (const [i, entry] of entries.entries()) expect((await spool.readMessage(entry.id)).toString()).toBe(`Subject: ${i}\r\n\r\nbody ${i}\r\n`);
    await eventually(async () => (await journalRecords()) === 0);
  });

  it('fails the commit when the journal flush fails, and leaves nothing behind', async () => {
    const spool = new FsSpool(dir, faultyFs({ datasyncOf: /\.log$/ }));
    await spool.recover();
    await expect(store(spool)).rejects.toThrow(/EIO/);
    await eventually(async () => (await journalRecords()) === 0);
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });

  it('keeps an acknowledged message in the journal while filing fails, and files it once the disk recovers', async () => {
    const failing: { renameTo?: RegExp } = { renameTo: /queue.*\.json$/ };
    const errors: string[] = [];
    const spool = new FsSpool(dir, faultyFs(failing), { onError: (event) => errors.push(event) });
    await spool.recover();
    const entry = await store(spool);
    await eventually(async () => errors.length > 0);
    expect(errors[0]).toBe('spool.filing_failed');
    expect(await journalRecords()).toBe(1);
    delete failing.renameTo;
    expect(await spool.get(entry.id)).toEqual(entry); // waits for the retried filing
    await eventually(async () => (await journalRecords()) === 0);
  });

  it('after a crash, files acknowledged messages that were only in the journal, skips filed ones and drops a torn tail', async () => {
    // A spool whose filing hangs (its tmp file never opens), as if the process died right after
    // the 250: the message exists only in the journal, and nothing of this spool runs on.
    let filingStarted = false;
    const crashed = new FsSpool(dir, {
      ...realSpoolFs,
      open: ((file: string, flags?: string, mode?: number) => {
        if (!/tmp.*\.eml$/.test(String(file))) return realSpoolFs.open(file, flags, mode);
        filingStarted = true;
        return new Promise(() => undefined);
      }) as SpoolFs['open'],
    }, CRASHED);
    await crashed.recover();
    const onlyInJournal = await store(crashed, 'Subject: journal only\r\n\r\nbody\r\n');
    await eventually(async () => filingStarted);
    let segment: string | undefined;
    for (const name of await list('journal')) if (decodeRecords(await readFile(path.join(dir, 'journal', name))).records.length > 0) segment = name;
    // Add a record for a message already filed, and half a record (a flush the crash interrupted).
    const filed = await store(new FsSpool(dir, realSpoolFs, { journal: false }));
    const filedRecord = Buffer.concat(encodeRecord(Buffer.from(JSON.stringify(filed)), Buffer.from('Subject: filed\r\n\r\nx\r\n')));
    const torn = Buffer.concat(encodeRecord(Buffer.from(JSON.stringify({ ...filed, id: newQueueId() })), Buffer.from('torn'))).subarray(0, 30);
    await writeFile(path.join(dir, 'journal', segment as string), Buffer.concat([await readFile(path.join(dir, 'journal', segment as string)), filedRecord, torn]));
    expect(decodeRecords(await readFile(path.join(dir, 'journal', segment as string))).records).toHaveLength(2);

    // The interrupted filing may have left its record's temporary file in tmp/ (written beside the message).
    const leftInTmp = (await list('tmp')).length;
    const restarted = new FsSpool(dir);
    const report = await restarted.recover();
    expect(report.replayed).toBe(1);
    expect(report.discardedPartial).toBe(1 + leftInTmp);
    expect(report.queued.map((e) => e.id).sort()).toEqual([onlyInJournal.id, filed.id].sort());
    // The start does not wait for filing: the message is readable (from the journal) at once,
    // filed into queue/ in the background, and then the segment is deleted.
    expect((await restarted.readMessage(onlyInJournal.id)).toString()).toBe('Subject: journal only\r\n\r\nbody\r\n');
    await eventually(async () => (await list('journal')).length === 0);
    expect((await readFile(path.join(dir, 'queue', `${onlyInJournal.id}.eml`))).toString()).toBe('Subject: journal only\r\n\r\nbody\r\n');
    await restarted.close();
  });

  it('starts at once on a journal a crash left behind, and a second crash resends nothing delivered meanwhile', async () => {
    // The crash left one segment: K (already filed into queue/), D (delivered before it was
    // filed: queue/D.done), U1 and U2 (only in the journal).
    const before = new FsSpool(dir, realSpoolFs, { journal: false, ...CRASHED });
    await before.recover();
    const k = await store(before);
    const [d, u1, u2] = [{ ...k, id: newQueueId() }, { ...k, id: newQueueId() }, { ...k, id: newQueueId() }];
    const segment = Buffer.concat([k, d, u1, u2].flatMap((e) => encodeRecord(Buffer.from(JSON.stringify(e)), Buffer.from(`Subject: ${e.id}\r\n\r\nx\r\n`))));
    await writeFile(path.join(dir, 'journal', `${newQueueId()}.log`), segment);
    await writeFile(path.join(dir, 'queue', `${d.id}.done`), '');

    // After the restart U2's filing hangs, so the segment has to stay while the relay runs on.
    const hangU2: SpoolFs = {
      ...realSpoolFs,
      open: ((file: string, flags?: string, mode?: number) =>
        String(file).includes(`${u2.id}.eml`) && String(file).includes(`${path.sep}tmp${path.sep}`) ? new Promise(() => undefined) : realSpoolFs.open(file, flags, mode)) as SpoolFs['open'],
    };
    const first = new FsSpool(dir, hangU2, CRASHED);
    const report = await first.recover();
    expect(report.replayed).toBe(2);
    expect(report.queued.map((e) => e.id)).toEqual([k.id, u1.id, u2.id].sort());
    await eventually(async () => (await list('queue')).includes(`${u1.id}.json`));
    // Delivered while the segment still holds them: each leaves a marker instead of vanishing.
    await first.remove(k.id);
    await first.remove(u1.id);
    expect(await list('queue')).toEqual([`${k.id}.done`, `${d.id}.done`, `${u1.id}.done`].sort());
    expect(await list('journal')).toHaveLength(1);

    // Second crash (the first spool is abandoned, its U2 filing never completes): only U2 comes back.
    const second = new FsSpool(dir);
    const again = await second.recover();
    expect(again.replayed).toBe(1);
    expect(again.queued.map((e) => e.id)).toEqual([u2.id]);
    await eventually(async () => (await list('journal')).length === 0 && (await list('queue')).length === 2);
    expect(await list('queue')).toEqual([`${u2.id}.eml`, `${u2.id}.json`]);
    await second.close();
  });

  it('never files a delivered message again, even when the restart finds it still in the journal', async () => {
    // Filing works, but the journal segment cannot be deleted: the crash finds the record there.
    const stuck: SpoolFs = { ...realSpoolFs, unlink: ((file: string) => (String(file).endsWith('.log') ? new Promise(() => undefined) : realSpoolFs.unlink(file))) as SpoolFs['unlink'] };
    const spool = new FsSpool(dir, stuck, CRASHED);
    await spool.recover();
    const delivered = await store(spool);
    const waiting = await store(spool);
    await eventually(async () => (await list('queue')).length === 4); // both filed
    await spool.remove(delivered.id);
    expect(await list('queue')).toEqual([`${delivered.id}.done`, `${waiting.id}.eml`, `${waiting.id}.json`].sort());
    expect(await journalRecords()).toBe(2);
    const report = await new FsSpool(dir).recover();
    expect(report.replayed).toBe(0);
    expect(report.queued.map((e) => e.id)).toEqual([waiting.id]);
    expect(await list('queue')).toEqual([`${waiting.id}.eml`, `${waiting.id}.json`]);
    expect(await journalRecords()).toBe(0);
  });

  it('reads a message from the journal before it is filed, and never files (or resends) one delivered first', async () => {
    // The first filing hangs (its tmp file never opens), so the second message waits unfiled.
    let hung = false;
    const hangFirstFiling: SpoolFs = {
      ...realSpoolFs,
      open: ((file: string, flags?: string, mode?: number) => {
        if (!hung && /tmp.*\.eml$/.test(String(file))) {
          hung = true;
          return new Promise(() => undefined);
        }
        return realSpoolFs.open(file, flags, mode);
      }) as SpoolFs['open'],
    };
    const spool = new FsSpool(dir, hangFirstFiling, CRASHED);
    await spool.recover();
    const stuck = await store(spool, 'Subject: stuck\r\n\r\nbody\r\n');
    const early = await store(spool, 'Subject: early\r\n\r\nbody\r\n');
    await eventually(async () => hung);
    expect((await spool.readMessage(early.id)).toString()).toBe('Subject: early\r\n\r\nbody\r\n');
    // Listing and showing do not wait for filing either (here it would wait for ever).
    expect((await spool.list('queue')).map((e) => e.id)).toEqual([stuck.id, early.id].sort());
    expect(await spool.get(early.id)).toEqual(early);
    expect(await spool.count('queue')).toBe(2);
    await spool.remove(early.id);
    expect(await list('queue')).toEqual([`${early.id}.done`]);
    // A restart files the stuck one from the journal and skips the delivered one, whose marker
    // stays until the segment holding it is deleted.
    const restarted = new FsSpool(dir);
    const report = await restarted.recover();
    expect(report.replayed).toBe(1);
    expect(report.queued.map((e) => e.id)).toEqual([stuck.id]);
    await eventually(async () => (await list('journal')).length === 0);
    await eventually(async () => !(await list('queue')).includes(`${early.id}.done`));
    expect(await list('queue')).toEqual([`${stuck.id}.eml`, `${stuck.id}.json`]);
    await restarted.close();
  });

  it('stops filing at close, leaving the rest in the journal for the next start (no errors)', async () => {
    // The first filing is slow, so close() finds two messages still waiting for their turn.
    let slowed = false;
    const slowFirstFiling: SpoolFs = {
      ...realSpoolFs,
      open: (async (file: string, flags?: string, mode?: number) => {
        if (!slowed && /tmp.*\.eml$/.test(String(file))) {
          slowed = true;
          await new Promise((r) => setTimeout(r, 200));
        }
        return realSpoolFs.open(file, flags, mode);
      }) as SpoolFs['open'],
    };
    const errors: string[] = [];
    const spool = new FsSpool(dir, slowFirstFiling, { onError: (event) => errors.push(event) });
    await spool.recover();
    const entries = [await store(spool), await store(spool), await store(spool)];
    await eventually(async () => slowed);
    await spool.close(10);
    await new Promise((r) => setTimeout(r, 400)); // the slow filing finishes; the others must not start
    expect(errors).toEqual([]);
    const restarted = new FsSpool(dir);
    const report = await restarted.recover();
    expect(report.replayed).toBe(2);
    expect(report.queued.map((e) => e.id).sort()).toEqual(entries.map((e) => e.id).sort());
    await eventually(async () => (await list('queue')).length === 6);
    await restarted.close();
  });

  it('files big messages directly (no journal), and so does intake when the filing backlog is full', async () => {
    const count = { journalSyncs: 0 };
    const spool = new FsSpool(dir, faultyFs({ count }), { journalMessageBytes: 1024, journalBacklogBytes: 0 });
    await spool.recover();
    const big = await store(spool, `Subject: big\r\n\r\n${'x'.repeat(2000)}\r\n`);
    const small = await store(spool);
    expect(count.journalSyncs).toBe(0);
    expect(await list('queue')).toEqual([`${big.id}.eml`, `${big.id}.json`, `${small.id}.eml`, `${small.id}.json`].sort());
  });
});

describe('directory fsync', () => {
  it('is skipped on Windows, where a directory cannot be flushed (EPERM), instead of failing every commit', async () => {
    let opened = 0;
    const eperm = async () => {
      opened += 1;
      return { sync: async () => Promise.reject(Object.assign(new Error('EPERM: operation not permitted, fsync'), { code: 'EPERM' })), close: async () => undefined };
    };
    await expect(new DirSyncer(dir, eperm, 'win32').sync()).resolves.toBeUndefined();
    expect(opened).toBe(0);
    await expect(new DirSyncer(dir, eperm, 'linux').sync()).rejects.toThrow(/EPERM/);
  });
});

describe('files the spool does not know', () => {
  it('moves every name it does not write to corrupt/, in every area, and still starts with the real messages', async () => {
    const spool = new FsSpool(dir, realSpoolFs, { journal: false });
    await spool.recover();
    const good = await store(spool);
    await spool.close();
    // An operator's backups of a real message (a copy of its record stopped the start with ENOENT;
    // a copy of its message file was deleted), an editor's leftovers, a note, a directory.
    const queued = async (name: string) => readFile(path.join(dir, 'queue', name));
    const strays: Array<[string, string | Buffer | null]> = [
      [`queue/${good.id}.json.bak`, await queued(`${good.id}.json`)],
      [`queue/${good.id}.eml.bak`, await queued(`${good.id}.eml`)],
      [`queue/.${good.id}.json.swp`, 'x'],
      ['queue/notes', null],
      [`failed/${good.id}.json~`, 'x'],
      [`journal/${newQueueId()}.log.old`, 'x'],
      ['tmp/README.txt', 'x'],
    ];
    for (const [name, content] of strays) {
      if (content === null) await mkdir(path.join(dir, name));
      else await writeFile(path.join(dir, name), content);
    }
    // corrupt/ already holds a file of one of those names: it is not overwritten.
    await writeFile(path.join(dir, 'corrupt', 'README.txt'), 'earlier');

    const report = await new FsSpool(dir).recover();
    expect(report.queued.map((e) => e.id)).toEqual([good.id]);
    expect(report.discardedPartial).toBe(0);
    expect(report.quarantined).toHaveLength(strays.length);
    for (const q of report.quarantined) expect(q.reason).toMatch(/not a name the spool writes/);
    const base = (name: string) => name.split('/')[1] as string;
    expect(await list('corrupt')).toEqual([...strays.map(([name]) => base(name)), 'README.txt.1'].sort());
    expect(await readFile(path.join(dir, 'corrupt', 'README.txt'), 'utf8')).toBe('earlier');
    expect(await list('queue')).toEqual([`${good.id}.eml`, `${good.id}.json`]);
    for (const area of ['tmp', 'failed', 'journal']) expect(await list(area)).toEqual([]);
  });
});

describe('journal segment decoding', () => {
  const records = [1, 2, 3].map((n) => Buffer.concat(encodeRecord(Buffer.from(`{"n":${n}}`), Buffer.from(`Subject: record ${n}\r\n\r\nbody\r\n`))));
  const segment = Buffer.concat(records);
  const bodies = (data: Buffer) => decodeRecords(data).records.map((r) => r.body.toString().split('\r\n')[0]);
  const start2 = (records[0] as Buffer).length;
  const length2 = (records[1] as Buffer).length;

  it('drops only an incomplete last record, as a torn tail', () => {
    for (const cut of [segment.length - 1, segment.length - length2 + 10, segment.length - length2 + 3]) {
      expect(decodeRecords(segment.subarray(0, cut))).toMatchObject({ tornBytes: cut - start2 - length2, corrupt: [] });
    }
    // A flush whose size reached the disk but whose data did not: zeros.
    expect(decodeRecords(Buffer.concat([segment, Buffer.alloc(100)]))).toMatchObject({ tornBytes: 100, corrupt: [] });
  });

  it('keeps the records after one that fails its checksum, and reports the damage', () => {
    for (const at of [start2 + 12 /* checksum */, start2 + 20 /* meta */, start2 + length2 - 3 /* body */]) {
      const damaged = Buffer.from(segment);
      damaged[at] = (damaged[at] as number) ^ 0x01;
      const decoded = decodeRecords(damaged);
      expect(bodies(damaged)).toEqual(['Subject: record 1', 'Subject: record 3']);
      expect(decoded).toMatchObject({ tornBytes: 0, corrupt: [{ offset: start2, bytes: length2 }], untrusted: 0 });
    }
  });

  it('reports, but never files, records found only by searching past a damaged length (they could be bytes inside a message)', () => {
    const damaged = Buffer.from(segment);
    damaged[start2 + 4] = (damaged[start2 + 4] as number) ^ 0x01; // meta length
    expect(decodeRecords(damaged)).toMatchObject({ tornBytes: 0, corrupt: [{ offset: start2, bytes: length2 }], untrusted: 1 });
    expect(bodies(damaged)).toEqual(['Subject: record 1']);
    // A message whose body carries a complete record of a sender's making, torn by a crash
    // during its flush: the forged record is never filed.
    const forged = Buffer.concat(encodeRecord(Buffer.from('{"forged":true}'), Buffer.from('Subject: forged\r\n\r\nx\r\n')));
    const carrier = Buffer.concat(encodeRecord(Buffer.from('{"n":9}'), Buffer.concat([Buffer.from('Subject: carrier\r\n\r\n'), forged, Buffer.alloc(500, 0x61)])));
    const torn = Buffer.concat([segment, carrier.subarray(0, carrier.length - 200)]);
    expect(bodies(torn)).toEqual(['Subject: record 1', 'Subject: record 2', 'Subject: record 3']);
    expect(decodeRecords(torn).records.some((r) => r.meta.toString().includes('forged'))).toBe(false);
  });

  it('reports a complete last record that fails its checksum as damage, not as a tear', () => {
    const damaged = Buffer.from(segment);
    damaged[segment.length - 3] = (damaged[segment.length - 3] as number) ^ 0x01;
    expect(decodeRecords(damaged)).toMatchObject({ tornBytes: 0, corrupt: [{ offset: start2 + length2 }] });
  });
});

describe('spool.dir lock', () => {
  it('lets one spool at a time recover a directory, names the holder, and takes over what a dead process left', async () => {
    // A relay that died (kill -9, power cut) left its PID; the OS lock died with it.
    await writeFile(path.join(dir, 'relay.lock'), '999999\n');
    const notices: Array<[string, Record<string, unknown>]> = [];
    const first = new FsSpool(dir, realSpoolFs, { onNotice: (event, fields) => notices.push([event, fields]) });
    await first.recover();
    expect(notices).toEqual([['spool.lock_taken_over', { previousPid: 999999, dir }]]);
    expect(await readFile(path.join(dir, 'relay.lock'), 'utf8')).toBe(`${process.pid}\n`);

    const second = new FsSpool(dir);
    await expect(second.recover()).rejects.toThrow(`spool.dir ${dir} is in use by another relay (PID ${process.pid})`);
    await first.close();
    // A clean stop leaves nothing to take over.
    const third = new FsSpool(dir, realSpoolFs, { onNotice: (event, fields) => notices.push([event, fields]) });
    await third.recover();
    expect(notices).toHaveLength(1);
    await third.close();
  });
});
