/**
 * One spool, one relay: an exclusive lock on spool.dir, taken before anything in it is read or
 * changed. Two relays on one spool delivered every message twice, and the second one's recovery
 * deleted the first one's files in flight (issue 11, item 8).
 *
 * The lock is an OS lock on spool.dir/relay.lock (fs-native-extensions: an open-file-description
 * fcntl lock on Linux, flock on macOS, LockFileEx on Windows), so it dies with the process that
 * holds it, kill -9 and power cut included: there is no stale lock to clean up, and no PID to
 * trust after a reboot (PID 1 in a container is always "alive"). The file also holds the holder's
 * PID, for the message the second relay prints. It is never deleted: deleting a lock file lets a
 * third process lock a new file while a second still holds the old one.
 */
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { tryLock } from 'fs-native-extensions';

export const LOCK_FILE = 'relay.lock';

export class SpoolLockedError extends Error {
  constructor(
    readonly dir: string,
    /** The PID written by the holder; null if it has not written it yet. */
    readonly pid: number | null,
  ) {
    super(
      `spool.dir ${dir} is in use by another relay (PID ${pid ?? 'unknown'}): one spool serves one relay. ` +
        `Stop that relay first, or give this one its own spool.dir; to manage the running relay's queue, use its admin API (admin.listen).`,
    );
    this.name = 'SpoolLockedError';
  }
}

export interface SpoolLock {
  /** The PID a previous holder left in the file (it ended without releasing: crash, kill -9, power cut); null otherwise. */
  readonly previousPid: number | null;
  release(): void;
}

function readPid(file: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Locks `dir` for this process, or throws SpoolLockedError naming the holder. */
export async function lockSpoolDir(dir: string): Promise<SpoolLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, LOCK_FILE);
  // Read and write, created if missing, never truncated before the lock is ours.
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  let locked = false;
  try {
    locked = tryLock(fd);
  } catch (err) {
    closeSync(fd);
    throw new Error(`cannot lock spool.dir ${dir} (${LOCK_FILE}): ${(err as Error).message}`);
  }
  if (!locked) {
    closeSync(fd);
    throw new SpoolLockedError(dir, readPid(file));
  }
  // The lock is ours: whatever PID is written there belongs to a process that has ended.
  const previousPid = readPid(file);
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let released = false;
  return {
    previousPid,
    release() {
      if (released) return;
      released = true;
      // Emptied first: the next start then knows this relay ended cleanly. Closing the last
      // descriptor releases the lock.
      try {
        ftruncateSync(fd, 0);
      } finally {
        closeSync(fd);
      }
    },
  };
}
