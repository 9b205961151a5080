/**
 * Issue 11 item 12: the token cache (it holds a refresh token) is written safely - unique temp
 * names, mode 0600 whatever was there before, fsync, rename. Real files in a temp directory.
 */
import { chmod, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../src/graph/token-cache-file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-tokencache-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const modeOf = async (file: string) => (await stat(file)).mode & 0o777;
const posix = process.platform !== 'win32';

describe('token cache file writes', () => {
  it('concurrent writes all succeed, the file holds one whole write, no temp file is left', async () => {
    const file = path.join(dir, 'token-cache.json');
    const contents = Array.from({ length: 25 }, (_, i) => JSON.stringify({ writer: i, pad: 'x'.repeat(4096 + i) }));
    const results = await Promise.allSettled(contents.map((c) => writeFileAtomic(file, c)));
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(contents).toContain(await readFile(file, 'utf8'));
    expect(await readdir(dir)).toEqual(['token-cache.json']);
  });

  it.runIf(posix)('forces mode 0600 even over a 0644 cache, a 0644 leftover temp file and a permissive umask', async () => {
    const file = path.join(dir, 'token-cache.json');
    await writeFile(file, 'old', { mode: 0o644 });
    await chmod(file, 0o644);
    // The temp name the previous code always used, left behind world-readable by a crash.
    await writeFile(`${file}.${process.pid}.tmp`, '', { mode: 0o644 });
    await chmod(`${file}.${process.pid}.tmp`, 0o644);
    const previousUmask = process.umask(0o000);
    try {
      await writeFileAtomic(file, '{"refresh":"secret"}');
    } finally {
      process.umask(previousUmask);
    }
    expect(await modeOf(file)).toBe(0o600);
    expect(await readFile(file, 'utf8')).toBe('{"refresh":"secret"}');
  });

  it.runIf(posix)('never writes through a symlink planted where a temp file would go', async () => {
    const file = path.join(dir, 'token-cache.json');
    const target = path.join(dir, 'elsewhere.txt');
    await writeFile(target, 'untouched');
    // Plant links at the old fixed temp name; the new names are unguessable and opened with O_EXCL.
    await symlink(target, `${file}.${process.pid}.tmp`);
    await writeFileAtomic(file, 'cache');
    expect(await readFile(target, 'utf8')).toBe('untouched');
    expect(await readFile(file, 'utf8')).toBe('cache');
  });
});
