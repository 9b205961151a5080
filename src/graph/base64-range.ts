/**
 * A base64 body range of a spool file, decoded, without leaving garbage behind: the file is read
 * into one reused buffer and decoded into another, and upload chunks are filled in a third.
 *
 * Why reuse: V8 collects Buffers (memory outside its heap) only when their total grows by its
 * external-memory soft limit, 64 MB. A fresh buffer per read, per decoded piece and per chunk
 * (three copies of every byte of a 60 MB attachment) let ~60 MB of dead buffers pile up before each
 * collection: the relay peaked at 185-200 MB RSS against the 200 MB budget (issue 13; a 5 ms
 * memoryUsage() timeline of large-messages.test.ts showed arrayBuffers climbing 15 -> 60 MB during
 * the upload, then dropping at once).
 */
import { open } from 'node:fs/promises';
import { noteBytesMoved } from '../memory/buffer-turnover.js';

/**
 * What one read takes from the file: 96 KiB of base64 text, 72 KiB decoded. The text becomes
 * strings (latin1, cleaned, joined with the carry); under V8's 128 KiB regular-object limit they
 * die young in the scavenger instead of in large-object space, which only a full collection frees.
 */
const READ_BYTES = 96 * 1024;
const NOT_BASE64 = /[^A-Za-z0-9+/=]/g;

/**
 * The decoded bytes of file[start, end), in pieces. Each piece is a view of a buffer that the next
 * piece overwrites: use or copy it before asking for the next one.
 */
export async function* decodedBase64(file: string, start: number, end: number): AsyncGenerator<Buffer> {
  if (end <= start) return;
  const handle = await open(file, 'r');
  try {
    const raw = Buffer.allocUnsafe(READ_BYTES);
    // Decoded output of one read plus the carried quartet: at most 3/4 of READ_BYTES + 3.
    const decoded = Buffer.allocUnsafe(READ_BYTES);
    let carry = '';
    for (let position = start; position < end; ) {
      const { bytesRead } = await handle.read(raw, 0, Math.min(READ_BYTES, end - position), position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const text = carry + raw.toString('latin1', 0, bytesRead).replace(NOT_BASE64, '');
      const usable = text.length - (text.length % 4);
      carry = text.slice(usable);
      if (usable > 0) yield decoded.subarray(0, decoded.write(text.slice(0, usable), 'base64'));
    }
    if (carry.replace(/=/g, '').length > 0) yield decoded.subarray(0, decoded.write(carry, 'base64'));
  } finally {
    await handle.close();
  }
}

/** How many bytes the range decodes to (the upload session is created with the exact size). */
export async function decodedSize(file: string, start: number, end: number): Promise<number> {
  let size = 0;
  for await (const piece of decodedBase64(file, start, end)) size += piece.length;
  return size;
}

/**
 * The decoded bytes from `from` on, in chunks of exactly `size` (the last may be shorter). Every
 * chunk is the same buffer refilled: the caller sends one before asking for the next.
 */
export async function* chunksFrom(source: AsyncIterable<Buffer>, from: number, size: number): AsyncGenerator<Buffer> {
  const chunk = Buffer.allocUnsafe(size);
  let skipped = 0;
  let filled = 0;
  for await (let piece of source) {
    if (skipped < from) {
      const skip = Math.min(from - skipped, piece.length);
      skipped += skip;
      piece = piece.subarray(skip);
    }
    while (piece.length > 0) {
      const copied = piece.copy(chunk, filled);
      filled += copied;
      piece = piece.subarray(copied);
      if (filled === size) {
        noteBytesMoved(size);
        yield chunk;
        filled = 0;
      }
    }
  }
  if (filled > 0) yield chunk.subarray(0, filled);
}
