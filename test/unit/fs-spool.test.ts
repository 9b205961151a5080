import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsSpool, realSpoolFs, type SpoolFs } from '../../src/spool/fs-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { NewMessage } from '../../src/spool/spool.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-fsspool-'));
});
afterEach(async () => {
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

const list = async (area: string) => (await readdir(path.join(dir, area))).sort();

describe('file spool', () => {
  it('commits a message and its record into queue/ and reads them back', async () => {
    const spool = new FsSpool(dir);
    await spool.recover();
    const entry = await store(spool);
    expect(await list('queue')).toEqual([`${entry.id}.eml`, `${entry.id}.json`]);
    expect(await list('tmp')).toEqual([]);
    expect((await spool.readMessage(entry.id)).toString()).toBe('Subject: s\r\n\r\nbody\r\n');
    expect(entry).toMatchObject({ size: 20, attempts: 0, held: false });
    expect(await spool.get(entry.id)).toEqual(entry);
  });

  it('writes nothing into queue/ when an fsync fails, and removes the partial file', async () => {
    const failingFs: SpoolFs = {
      ...realSpoolFs,
      open: (async (file: string, flags?: string, mode?: number) => {
        const handle = await realSpoolFs.open(file, flags, mode);
        if (String(file).endsWith('.eml')) handle.sync = handle.datasync = async () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
        return handle;
      }) as SpoolFs['open'],
    };
    const spool = new FsSpool(dir, failingFs);
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
    const spool = new FsSpool(dir, failingFs);
    await spool.recover();
    const id = newQueueId();
    const writer = await spool.beginMessage(id);
    await writer.write(Buffer.from('x'));
    await expect(writer.commit(meta(id))).rejects.toThrow(/ENOSPC/);
    await writer.abort();
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });

  it('recovers after a crash: drops partial intake, keeps committed mail, quarantines corrupt records', async () => {
    const spool = new FsSpool(dir);
    await spool.recover();
    const good = await store(spool);
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
    const spool = new FsSpool(dir);
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
    const spool = new FsSpool(dir);
    await spool.recover();
    const entry = await store(spool);
    // Simulate: failed/ record written, queue/ files not yet removed.
    await writeFile(path.join(dir, 'failed', `${entry.id}.json`), JSON.stringify({ ...entry, failReason: 'x', failedAt: 1 }));
    await writeFile(path.join(dir, 'failed', `${entry.id}.eml`), await readFile(path.join(dir, 'queue', `${entry.id}.eml`)));
    const report = await new FsSpool(dir).recover();
    expect(report.completedMoves).toBe(1);
    expect(report.queued).toEqual([]);
    expect(await list('queue')).toEqual([]);
  });

  it('updates delivery state atomically and removes delivered mail', async () => {
    const spool = new FsSpool(dir);
    await spool.recover();
    const entry = await store(spool);
    await spool.update({ ...entry, attempts: 2, nextAttemptAt: 42, lastError: { at: 1, kind: 'transient', message: 'HTTP 429', requestId: 'r-1' } });
    expect(await spool.get(entry.id)).toMatchObject({ attempts: 2, nextAttemptAt: 42, lastError: { requestId: 'r-1' } });
    await spool.remove(entry.id);
    expect(await list('queue')).toEqual([]);
    expect(await list('tmp')).toEqual([]);
  });
});
