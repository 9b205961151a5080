/**
 * MSAL's token cache persisted to a file for the delegated device-code flow: written atomically
 * (unique temp file + fsync + rename, see writeFileAtomic) with mode 0600, optionally encrypted
 * with AES-256-GCM. The cache holds a refresh token, so it is a secret: it never goes to logs or
 * the spool.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ICachePlugin, TokenCacheContext } from '@azure/msal-node';

interface EncryptedCache {
  v: 1;
  alg: 'aes-256-gcm';
  iv: string;
  tag: string;
  data: string;
}

function keyFrom(secret: string): Buffer {
  return createHash('sha256').update(`smtp-graph-relay token cache\0${secret}`).digest();
}

export function encryptCache(plain: string, secret: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyFrom(secret), iv);
  const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  const sealed: EncryptedCache = { v: 1, alg: 'aes-256-gcm', iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
  return JSON.stringify(sealed);
}

export function decryptCache(text: string, secret: string): string {
  const sealed = JSON.parse(text) as Partial<EncryptedCache>;
  if (sealed.alg !== 'aes-256-gcm' || !sealed.iv || !sealed.tag || !sealed.data) throw new Error('the token cache is not encrypted, but graph.auth.tokenCacheKey is set');
  const decipher = createDecipheriv('aes-256-gcm', keyFrom(secret), Buffer.from(sealed.iv, 'base64'));
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.data, 'base64')), decipher.final()]).toString('utf8');
}

/**
 * Replaces `file` with `content` so that a reader sees the old or the new cache, never a mix, and
 * the refresh token inside is never readable by others:
 * - a unique temp name per write (concurrent writers do not rename each other's file away);
 * - created with O_EXCL ('wx'): never reuses, truncates or follows a file or symlink already there;
 * - mode forced with fchmod (the open mode is filtered by the umask, an explicit chmod is not);
 * - fsync of the data, rename, then fsync of the directory so the rename itself is durable.
 * (write-file-atomic opens its temp file with 'w', which follows a planted symlink: hence these lines.)
 */
export async function writeFileAtomic(file: string, content: string, mode = 0o600): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(8).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.chmod(mode);
    await handle.writeFile(content);
    await handle.sync();
    await handle.close();
    await rename(tmp, file);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDirectory(path.dirname(file));
}

async function syncDirectory(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Windows cannot open or fsync a directory; the rename is as durable as the platform makes it.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

export class FileTokenCachePlugin implements ICachePlugin {
  constructor(
    private readonly file: string,
    private readonly encryptionSecret?: string,
  ) {}

  async beforeCacheAccess(context: TokenCacheContext): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // not logged in yet
      throw err;
    }
    context.tokenCache.deserialize(this.encryptionSecret ? decryptCache(text, this.encryptionSecret) : text);
  }

  async afterCacheAccess(context: TokenCacheContext): Promise<void> {
    if (!context.cacheHasChanged) return;
    const plain = context.tokenCache.serialize();
    await writeFileAtomic(this.file, this.encryptionSecret ? encryptCache(plain, this.encryptionSecret) : plain);
  }
}
