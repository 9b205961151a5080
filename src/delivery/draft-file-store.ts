/**
 * The drafts of one relay in a small file beside its spool (graph-drafts.json): the whole list is
 * written to a new file and renamed into place at every change, so it is never half-written, and
 * read back at the next start.
 */
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { DraftRecord, DraftStore } from '../spool/spool.js';

export class FileDraftStore implements DraftStore {
  constructor(
    private readonly file: string,
    private readonly logger: Logger,
  ) {}

  async load(): Promise<DraftRecord[]> {
    // The file spool has made spool.dir by now; made here too so this store depends on nothing else.
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    let stored: unknown = [];
    try {
      stored = JSON.parse(await readFile(this.file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.logger.error({ event: 'draft.record_unreadable', file: this.file, err: (err as Error).message }, 'the record of drafts to delete could not be read; drafts may be left in Drafts');
    }
    return Array.isArray(stored) ? (stored as DraftRecord[]) : [];
  }

  put(_record: DraftRecord, all: readonly DraftRecord[]): Promise<void> {
    return this.write(all);
  }

  drop(_draftId: string, all: readonly DraftRecord[]): Promise<void> {
    return this.write(all);
  }

  private async write(all: readonly DraftRecord[]): Promise<void> {
    const tmp = `${this.file}.tmp`;
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify(all));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.file);
  }
}
