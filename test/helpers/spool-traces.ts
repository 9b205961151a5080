/**
 * "Nothing left behind", checked in every area of the file-system spool (issue 16, item 2). With
 * the journal on (the default) a small message never touches tmp/, so a check of tmp/ alone
 * cannot fail: a refused message could sit in a journal record, or a truncated copy in queue/.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeRecords } from '../../src/spool/fs/journal.js';
import { until } from './wait.js';

export const SPOOL_AREAS = ['tmp', 'journal', 'queue', 'failed', 'corrupt'] as const;
export type SpoolArea = (typeof SPOOL_AREAS)[number];

async function names(spoolDir: string, area: SpoolArea): Promise<string[]> {
  return (await readdir(path.join(spoolDir, area)).catch(() => [] as string[])).sort();
}

/** Every file in the spool, per area. */
export async function spoolFiles(spoolDir: string): Promise<Record<SpoolArea, string[]>> {
  const files = {} as Record<SpoolArea, string[]>;
  for (const area of SPOOL_AREAS) files[area] = await names(spoolDir, area);
  return files;
}

/**
 * Where the spool holds `marker` (a header line only one message carries, or a queue id): in a
 * file's name or bytes, in any area, raw (a torn or unacknowledged journal record included), and each
 * journal record that verifies, as journal/SEGMENT#n.
 */
export async function tracesOf(spoolDir: string, marker: string): Promise<string[]> {
  const needle = Buffer.from(marker);
  const found: string[] = [];
  for (const area of SPOOL_AREAS) {
    for (const name of await names(spoolDir, area)) {
      // A file can be renamed or deleted between the listing and the read: it then holds nothing here.
      const data = await readFile(path.join(spoolDir, area, name)).catch(() => Buffer.alloc(0));
      if (name.includes(marker) || data.includes(needle)) found.push(`${area}/${name}`);
      if (area === 'journal') {
        for (const [n, record] of decodeRecords(data).records.entries()) if (record.body.includes(needle) || record.meta.includes(needle)) found.push(`journal/${name}#${n}`);
      }
    }
  }
  return found;
}

/** Journal segments that hold any byte (records, or the start of one); the spare segment created ahead is empty. */
async function usedSegments(spoolDir: string): Promise<string[]> {
  const used: string[] = [];
  for (const name of await names(spoolDir, 'journal')) {
    const data = await readFile(path.join(spoolDir, 'journal', name)).catch(() => Buffer.alloc(0));
    if (data.length > 0) used.push(name);
  }
  return used;
}

/**
 * Waits until the spool is at rest with nothing half-done: tmp/ empty, no journal segment holding
 * anything (every acknowledged message filed, its segment deleted), corrupt/ empty. queue/ and
 * failed/ are the caller's to check (they hold real messages).
 */
export async function untilNothingLeftBehind(spoolDir: string, ms = 10_000): Promise<void> {
  let files = await spoolFiles(spoolDir);
  await until(
    async () => {
      files = { ...(await spoolFiles(spoolDir)), journal: await usedSegments(spoolDir) };
      return files.tmp.length === 0 && files.journal.length === 0 && files.corrupt.length === 0;
    },
    ms,
    () => `left behind: ${JSON.stringify(files)}`,
  );
}
