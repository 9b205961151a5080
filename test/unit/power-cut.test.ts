/**
 * Simulated power cuts (issue 16, item 1): a burst of messages on the file-system spool, recorded
 * by a layer that knows which writes, renames and directory entries an fsync/fdatasync made
 * durable (test/helpers/power-cut-fs.ts). At every cut point of the run (after every completed
 * sync and every acknowledgement) everything not yet durable is thrown away, recovery runs on
 * what is left, and:
 *   - every message that got its 250 before the cut is there exactly once, whole, with its
 *     envelope (unless its delivery had started: removal need not be durable, at-least-once);
 *   - nothing else is there as if acknowledged: every message recovered is one whose commit was
 *     called, byte for byte, and nothing is quarantined (no half-written record passes as one).
 *
 * Mutations planted one at a time (2026-12-02), each made this test fail; the SIGKILL test
 * (crash-recovery.test.ts) cannot see them, because the kernel keeps every write of a killed process:
 *   1. journal flush not awaited (journal.ts flush(): `void segment.handle.datasync()`): journal
 *      mode fails, "acknowledged ... lost" at cuts between a 250 and the end of its flush.
 *   2. rename before its file's fsync (fs-spool.ts writeDurable() without `await handle.datasync()`,
 *      so a record is renamed into queue/ unflushed): both modes fail, empty records quarantined
 *      ("not JSON") and acknowledged messages lost.
 *   3. missing directory fsync (fs-spool.ts fileIntoQueue() without `await this.syncers.queue.sync()`):
 *      both modes fail; in journal mode the loss comes once the filed segment is retired.
 *   4. a new journal segment's directory entry not fsynced before its first 250 (journal.ts
 *      createSegment() without `await this.dirSyncer.sync()`): journal mode fails.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsSpool, type FsSpoolOptions } from '../../src/spool/fs/fs-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { NewMessage } from '../../src/spool/spool.js';
import { PowerCutRecorder, unsyncedSpoolFs } from '../helpers/power-cut-fs.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-powercut-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
});

const AREAS = ['journal', 'tmp', 'queue', 'failed', 'corrupt'];
// Small enough that a quarter of the burst takes the direct path even with the journal on.
const JOURNAL_MESSAGE_BYTES = 2048;
const MESSAGES = 40;

/** A small deterministic generator (mulberry32), so a failing cut can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function meta(id: string, n: number): NewMessage {
  return { id, receivedAt: 1_700_000_000_000 + n, envelope: { mailFrom: `dev${n}@x.example`, rcptTo: [`ops${n}@x.example`] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: 'relay@x.example' };
}

interface Sent {
  body: Buffer;
  meta: NewMessage;
}

/** The burst: concurrent intake (some aborted mid-DATA, some large), some deliveries, then a clean stop. */
async function burst(root: string, recorder: PowerCutRecorder, options: FsSpoolOptions, seed: number): Promise<Map<string, Sent>> {
  const next = random(seed);
  const spool = new FsSpool(root, recorder.fs, { ...options, journalMessageBytes: JOURNAL_MESSAGE_BYTES });
  await spool.recover();
  const sent = new Map<string, Sent>();
  const one = async (n: number) => {
    await new Promise((r) => setTimeout(r, Math.floor(next() * 30)));
    const id = newQueueId();
    const size = n % 4 === 0 ? 3000 + Math.floor(next() * 2000) : 100 + Math.floor(next() * 1500);
    const body = Buffer.from(`Subject: m${n}\r\nX-Id: ${id}\r\n\r\n${String(n).repeat(size).slice(0, size)}\r\n`);
    const writer = await spool.beginMessage(id);
    await writer.write(body.subarray(0, 40));
    await new Promise((r) => setImmediate(r));
    await writer.write(body.subarray(40));
    if (n % 7 === 3) {
      // The client went away before the final dot (or was refused): never acknowledged.
      await writer.abort();
      return;
    }
    sent.set(id, { body, meta: meta(id, n) });
    recorder.mark('commit', id);
    await writer.commit(meta(id, n));
    recorder.mark('ack', id); // the 250 goes out here
    if (n % 5 === 1) {
      recorder.mark('delivering', id);
      await spool.remove(id);
    }
  };
  await Promise.all(Array.from({ length: MESSAGES }, (_, n) => one(n)));
  await spool.close(10_000);
  return sent;
}

/** Recovers one cut; returns what is wrong with it (empty: nothing). */
async function checkCut(recorder: PowerCutRecorder, at: number, root: string, sent: Map<string, Sent>, options: FsSpoolOptions): Promise<string[]> {
  const state = recorder.stateAt(at);
  const cutRoot = path.join(dir, `cut-${at}`);
  await PowerCutRecorder.materialize(state, root, cutRoot);
  const spool = new FsSpool(cutRoot, unsyncedSpoolFs, { ...options, journalMessageBytes: JOURNAL_MESSAGE_BYTES });
  const problems: string[] = [];
  try {
    const report = await spool.recover();
    const ids = report.queued.map((e) => e.id);
    const acked = state.marks.get('ack') ?? new Set();
    const committing = state.marks.get('commit') ?? new Set();
    const delivering = state.marks.get('delivering') ?? new Set();
    if (new Set(ids).size !== ids.length) problems.push(`queued twice: ${ids.filter((id, i) => ids.indexOf(id) !== i).join(', ')}`);
    for (const id of acked) if (!delivering.has(id) && !ids.includes(id)) problems.push(`acknowledged ${id} lost`);
    // Read at once, as delivery would right after the start (from the journal, while unfiled).
    const bodies = await Promise.all(report.queued.map((e) => spool.readMessage(e.id)));
    for (const [i, entry] of report.queued.entries()) {
      const expected = sent.get(entry.id);
      if (!expected || !committing.has(entry.id)) {
        problems.push(`${entry.id} recovered but never committed`);
        continue;
      }
      const body = bodies[i] as Buffer;
      if (!body.equals(expected.body)) problems.push(`${entry.id} recovered with ${body.length} of ${expected.body.length} bytes, or other bytes`);
      if (JSON.stringify(entry.envelope) !== JSON.stringify(expected.meta.envelope) || entry.size !== expected.body.length) problems.push(`${entry.id} recovered with another envelope or size`);
    }
    for (const q of report.quarantined) problems.push(`quarantined ${q.id}: ${q.reason}`);
  } finally {
    await spool.close(0);
    await rm(cutRoot, { recursive: true, force: true, maxRetries: 3 });
  }
  return problems.map((p) => `cut after event ${at} of ${recorder.events.length}: ${p}`);
}

const modes: Array<[string, FsSpoolOptions, number]> = [
  ['journal', {}, 1101],
  ['direct', { journal: false }, 2202],
];

describe.each(modes)('a power cut during a burst (%s commit)', (_mode, options, seed) => {
  it('keeps every acknowledged message exactly once and whole, at every cut point, and nothing else as acknowledged', async () => {
    const root = path.join(dir, 'spool');
    for (const area of AREAS) await mkdir(path.join(root, area), { recursive: true });
    const recorder = new PowerCutRecorder(AREAS.map((a) => path.join(root, a)));
    await recorder.start();
    const sent = await burst(root, recorder, options, seed);
    const marks = recorder.events.filter((e) => e.type === 'mark');
    expect(marks.filter((e) => e.label === 'ack')).toHaveLength(sent.size); // the burst really ran

    const problems: string[] = [];
    // Every boundary: the durable state only changes at a completed sync, and what the test
    // expects only at a mark, so cutting after each event covers every operation boundary.
    for (let at = 0; at <= recorder.events.length; at++) problems.push(...(await checkCut(recorder, at, root, sent, options)));
    console.info(`power cut (${_mode}): ${sent.size} committed, ${recorder.events.length - marks.length} syncs, ${recorder.events.length + 1} cut points checked`);
    expect(problems.slice(0, 20)).toEqual([]);
  });
});
