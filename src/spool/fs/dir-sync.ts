import type { FileHandle } from 'node:fs/promises';

type OpenDir = (dir: string) => Promise<Pick<FileHandle, 'sync' | 'close'>>;

/**
 * Group commit for directory fsyncs. A rename is durable only after its directory is fsynced;
 * callers that arrive while an fsync runs share the next one instead of queueing one each, so a
 * burst of N messages costs about two directory fsyncs instead of N (the per-message file fsync stays).
 */
export class DirSyncer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(
    private readonly dir: string,
    private readonly openDir: OpenDir,
    private readonly platform: NodeJS.Platform = process.platform,
  ) {}

  sync(): Promise<void> {
    if (this.running === null) {
      this.running = this.syncOnce().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    // A sync already in flight may have started before our rename: wait for the one after it.
    if (this.next === null) {
      this.next = this.running
        .catch(() => undefined)
        .then(() => {
          this.next = null;
          return this.sync();
        });
    }
    return this.next;
  }

  private async syncOnce(): Promise<void> {
    // Windows cannot flush a directory: FlushFileBuffers on a directory handle fails with EPERM
    // (nodejs/node#3879), which would turn every commit into a 451. NTFS journals the rename
    // itself; the files are still flushed before the 250 (README, "Windows").
    if (this.platform === 'win32') return;
    const handle = await this.openDir(this.dir);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}
