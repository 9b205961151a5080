/**
 * "250 means durable": when the durable write fails, the client gets 451 4.3.0 (and keeps the
 * message), nothing half-written stays behind, and the relay keeps serving once the disk recovers.
 * With the intake journal (the default) the durable write before the 250 is the journal flush;
 * filing into queue/ happens after it, so a failure there must not lose the acknowledged message.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsSpool } from '../../src/spool/fs/fs-spool.js';
import { realSpoolFs, type SpoolFs } from '../../src/spool/fs/spool-fs.js';
import { decodeRecords } from '../../src/spool/fs/journal.js';
import { until } from '../helpers/wait.js';
import { tracesOf, untilNothingLeftBehind } from '../helpers/spool-traces.js';
import { startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

let failNext: 'fsync' | 'rename' | null = null;
const flakyFs: SpoolFs = {
  ...realSpoolFs,
  open: (async (file: string, flags?: string, mode?: number) => {
    const handle = await realSpoolFs.open(file, flags, mode);
    if (failNext === 'fsync' && /\.(eml|log)$/.test(String(file))) {
      failNext = null;
      handle.sync = handle.datasync = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    }
    return handle;
  }) as SpoolFs['open'],
  rename: (async (from: string, to: string) => {
    if (failNext === 'rename' && String(to).endsWith('.json') && String(to).includes(`${path.sep}queue${path.sep}`)) {
      failNext = null;
      throw Object.assign(new Error('ENOSPC: no space left on device, rename'), { code: 'ENOSPC' });
    }
    return realSpoolFs.rename(from, to);
  }) as SpoolFs['rename'],
};

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ spool: (dir) => new FsSpool(dir, flakyFs) });
});
afterAll(async () => {
  await h.close();
});

describe('a failing spool disk', () => {
  it('answers 451 4.3.0 when the fsync before the 250 fails, leaving nothing behind', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO c');
    failNext = 'fsync';
    const refused = await client.send('a@contoso.example', ['b@contoso.example'], 'Subject: fsync\r\nX-Test-Id: disk-fsync-refused\r\n\r\nbody\r\n');
    expect(refused.code).toBe(451);
    expect(refused.text).toMatch(/^4\.3\.0 /);
    expect(failNext).toBeNull(); // the fault really happened
    expect(await readdir(path.join(h.spoolDir, 'tmp'))).toEqual([]);
    expect(await readdir(path.join(h.spoolDir, 'queue'))).toEqual([]);
    await until(async () => (await journalRecords()) === 0);
    // Every area: the bytes written before the failed flush go with their segment, nothing stays.
    await untilNothingLeftBehind(h.spoolDir);
    expect(await tracesOf(h.spoolDir, 'X-Test-Id: disk-fsync-refused')).toEqual([]);
    // The same session succeeds once the disk is back.
    const accepted = await client.send('a@contoso.example', ['b@contoso.example'], 'Subject: retry\r\nX-Test-Id: disk-fsync\r\n\r\nbody\r\n');
    expect(accepted.code).toBe(250);
    await client.quit();
    await waitForDelivery(h.emulator, 'disk-fsync');
  });

  it('keeps an acknowledged message when filing it into queue/ fails once, and delivers it', async () => {
    const client = await RawSmtpClient.connect(h.port);
    await client.reply();
    await client.command('EHLO c');
    failNext = 'rename';
    // Graph's first answer is a 503 with Retry-After: 1, so the message waits a second and is
    // filed (5 ms after intake went idle) before it is delivered; one delivered first is never
    // filed at all. (A 300 ms slow answer was not always enough under a full suite's load.)
    h.emulator.faults.add({ route: 'sendMail', status: 503, retryAfter: '1' });
    const accepted = await client.send('a@contoso.example', ['b@contoso.example'], 'Subject: rename\r\nX-Test-Id: disk-rename\r\n\r\nbody\r\n');
    expect(accepted.code).toBe(250);
    await client.quit();
    await waitForDelivery(h.emulator, 'disk-rename');
    expect(failNext).toBeNull(); // the fault really happened
  });
});

async function journalRecords(): Promise<number> {
  let records = 0;
  for (const name of await readdir(path.join(h.spoolDir, 'journal'))) {
    // A segment can be deleted between the listing and the read: it then holds nothing.
    const data = await readFile(path.join(h.spoolDir, 'journal', name)).catch(() => Buffer.alloc(0));
    records += decodeRecords(data).records.length;
  }
  return records;
}
