/**
 * A damaged journal record is not a torn tail (issue 11, item 9): one flipped byte in record 2 of
 * a 3-record segment on disk, then a relay start. Records 1 and 3 (acknowledged) are delivered,
 * the segment is kept in corrupt/, and the operator is told (error log, metric).
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirSyncer } from '../../src/spool/fs/dir-sync.js';
import { decodeRecords, IntakeJournal } from '../../src/spool/fs/journal.js';
import { realSpoolFs } from '../../src/spool/fs/spool-fs.js';
import type { SpoolEntry } from '../../src/spool/entry.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

describe('a damaged journal segment', () => {
  it('files the records that verify after a bad checksum, keeps the segment in corrupt/ and tells the operator', async () => {
    await h.relay.stop(2000);
    // Three acknowledged messages, written by the journal itself, as a crash right after the
    // 250s leaves them (close() keeps a segment whose messages are not filed).
    const journalDir = path.join(h.spoolDir, 'journal');
    const journal = new IntakeJournal(journalDir, realSpoolFs, new DirSyncer(journalDir, (d) => realSpoolFs.open(d, 'r')), {
      maxSegmentBytes: 4 * 1024 * 1024,
      maxSegmentAgeMs: 60_000,
      idleMs: 5,
      now: Date.now,
      onError: () => undefined,
    });
    const ids = [1, 2, 3].map((n) => ({ n, id: newQueueId() }));
    const entry = (id: string): SpoolEntry => ({
      version: 1,
      id,
      receivedAt: Date.now(),
      envelope: { mailFrom: 'scanner@contoso.example', rcptTo: ['ops@contoso.example'] },
      client: { address: '127.0.0.1', helo: 'scanner' },
      size: 0,
      mailbox: MAILBOX,
      attempts: 0,
      nextAttemptAt: 0,
      held: false,
    });
    const appended = ids.map(({ n, id }) => journal.append(Buffer.from(JSON.stringify(entry(id))), Buffer.from(`From: scanner@contoso.example\r\nTo: ops@contoso.example\r\nSubject: damaged ${n}\r\nX-Test-Id: damage-${n}\r\n\r\nbody ${n}\r\n`)));
    const locations = await Promise.all(appended);
    await journal.close();
    const segmentFile = locations[0]?.segment.file as string;
    expect(new Set(locations.map((l) => l.segment.file)).size).toBe(1);

    // Flip one byte in the body of record 2.
    const data = await readFile(segmentFile);
    const records = decodeRecords(data).records;
    expect(records).toHaveLength(3);
    const at = (records[1]?.bodyOffset as number) + 4;
    data[at] = (data[at] as number) ^ 0x20;
    await writeFile(segmentFile, data);

    await h.restart();
    // Records 1 and 3 were acknowledged and verify: both delivered. Record 2 cannot be trusted.
    await waitForDelivery(h.emulator, 'damage-1');
    await waitForDelivery(h.emulator, 'damage-3');
    expect(h.emulator.mail.delivered.filter((m) => m.mime?.toString('latin1').includes('X-Test-Id: damage-2'))).toEqual([]);

    expect(await readdir(journalDir)).toEqual([]);
    expect(await readdir(path.join(h.spoolDir, 'corrupt'))).toEqual([path.basename(segmentFile)]);
    const logged = h.logs.records.filter((r) => r.event === 'spool.quarantined');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 'error', area: 'journal', operatorActionRequired: true, queueId: path.basename(segmentFile) });
    expect(String(logged[0]?.reason)).toMatch(/failed the checksum.*the 2 records that verify are filed/);
    expect(h.logs.records.filter((r) => r.event === 'spool.recovered').at(-1)).toMatchObject({ discardedPartial: 0, quarantined: 1 });
    expect(await h.relay.metrics.registry.metrics()).toMatch(/^relay_spool_quarantined_total\{area="journal"\} 1$/m);
  });
});
