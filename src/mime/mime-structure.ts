/**
 * A streaming structural scan of a spooled MIME message: where each leaf part's headers and body
 * start and end (byte offsets), with the attachment facts Graph's upload sessions need. Nothing is
 * decoded and at most one line prefix is held, so a 60 MB message costs a few KiB of memory.
 * Used by the large-message path to take big attachments out of the MIME and upload them apart.
 *
 * Linear in the message size (issue 11, item 13): a delimiter line is looked up in a map from
 * boundary to its multipart's depth instead of being compared with every open multipart (that
 * comparison froze the event loop for 1.5 s on a crafted 3.4 MiB message, on every retry), and
 * nesting deeper than MAX_MULTIPART_DEPTH is refused with MimeStructureError.
 */
import { createReadStream } from 'node:fs';
import libmime from 'libmime';
import { parseHeaderBlock } from './header-block.js';

export interface LeafPart {
  /** [cutStart, cutEnd): the bytes to remove to take this part out (from the CRLF before its delimiter). */
  cutStart: number;
  cutEnd: number;
  bodyStart: number;
  bodyEnd: number;
  contentType: string;
  transferEncoding: string;
  disposition: 'attachment' | 'inline' | null;
  filename: string | null;
  contentId: string | null;
}

interface Frame {
  boundary: string;
  /** The leaf currently being read in this multipart, waiting for its end. */
  open: Omit<LeafPart, 'cutEnd' | 'bodyEnd'> | null;
  /** The depth an outer multipart with the same boundary had in the lookup map (restored when this one closes). */
  shadows: number | undefined;
}

const MAX_HEADER_BYTES = 64 * 1024;
/**
 * Multipart nesting the scan follows: Postfix's mime_nesting_limit default (100). Real mail nests a
 * few levels (a forwarded message with alternatives and attachments is about 5); more is crafted.
 */
export const MAX_MULTIPART_DEPTH = 100;
const READ_CHUNK = 64 * 1024;
/**
 * The scan hands the event loop back after this much work, checked every LINES_PER_CHECK lines, so
 * SMTP sessions, deliveries and the admin API keep being served while a big message is scanned
 * (issue 11 item 13 allows no stall of 100 ms; one 64 KiB read took 20-250 ms on a loaded 2-core machine).
 */
const YIELD_AFTER_MS = 10;
const LINES_PER_CHECK = 1024;
const EMPTY = Buffer.alloc(0);

/** The message's structure cannot be followed (too deeply nested): a permanent refusal, not a retry. */
export class MimeStructureError extends Error {
  override readonly name = 'MimeStructureError';
}

function boundaryOf(contentType: string): string | null {
  const parsed = libmime.parseHeaderValue(contentType);
  return parsed.value.toLowerCase().startsWith('multipart/') && parsed.params.boundary ? parsed.params.boundary : null;
}

function describe(headerBlock: Buffer): Pick<LeafPart, 'contentType' | 'transferEncoding' | 'disposition' | 'filename' | 'contentId'> & { boundary: string | null } {
  const fields = parseHeaderBlock(headerBlock);
  const get = (name: string) => fields.find((f) => f.name === name)?.value ?? '';
  const type = libmime.parseHeaderValue(get('content-type') || 'text/plain');
  const disposition = libmime.parseHeaderValue(get('content-disposition'));
  const dispositionValue = disposition.value.toLowerCase();
  const rawName = disposition.params.filename ?? type.params.name ?? null;
  const contentId = get('content-id').trim();
  return {
    contentType: type.value.toLowerCase() || 'application/octet-stream',
    transferEncoding: (get('content-transfer-encoding') || '7bit').trim().toLowerCase(),
    disposition: dispositionValue === 'attachment' || dispositionValue === 'inline' ? dispositionValue : null,
    filename: rawName ? libmime.decodeWords(rawName) : null,
    contentId: contentId ? contentId.replace(/^<|>$/g, '') : null,
    boundary: boundaryOf(get('content-type')),
  };
}

/**
 * The open multiparts, innermost last, with an index from boundary to depth, so that a delimiter
 * line costs one map lookup whatever the depth (RFC 2046 5.1.1 forbids a nested multipart from
 * reusing an enclosing boundary; if one does anyway, the innermost wins, as it always did here).
 */
class MultipartStack {
  readonly frames: Frame[] = [];
  private readonly depthOf = new Map<string, number>();
  /** How many open boundaries have each length: most "--" lines are rejected by length, without a string. */
  private readonly lengths = new Map<number, number>();

  get depth(): number {
    return this.frames.length;
  }

  push(boundary: string): void {
    if (this.frames.length >= MAX_MULTIPART_DEPTH) {
      throw new MimeStructureError(`the message nests multipart MIME parts more than ${MAX_MULTIPART_DEPTH} levels deep (the relay's limit, as Postfix's mime_nesting_limit), so its attachments cannot be taken out for upload; real mail nests a few levels, so this message is malformed or crafted. The sender must send it with less nesting (or under 3 MiB, which needs no split)`);
    }
    this.frames.push({ boundary, open: null, shadows: this.depthOf.get(boundary) });
    this.depthOf.set(boundary, this.frames.length - 1);
    this.lengths.set(boundary.length, (this.lengths.get(boundary.length) ?? 0) + 1);
  }

  pop(): Frame {
    const frame = this.frames.pop() as Frame;
    if (frame.shadows === undefined) this.depthOf.delete(frame.boundary);
    else this.depthOf.set(frame.boundary, frame.shadows);
    const left = (this.lengths.get(frame.boundary.length) ?? 1) - 1;
    if (left === 0) this.lengths.delete(frame.boundary.length);
    else this.lengths.set(frame.boundary.length, left);
    return frame;
  }

  /**
   * The depth of the multipart that the line buffer[from, to) (starting with "--", trailing CR
   * and white space ignored) delimits ("--b") or closes ("--b--"), the innermost first; null if
   * none. Reads the bytes in place: no copy for the many lines that match nothing.
   */
  match(buffer: Buffer, from: number, to: number): { depth: number; closing: boolean } | null {
    let end = to;
    while (end > from + 2 && (buffer[end - 1] === 0x0d || buffer[end - 1] === 0x20 || buffer[end - 1] === 0x09)) end--;
    const length = end - from;
    const mayClose = length >= 4 && buffer[end - 1] === 0x2d && buffer[end - 2] === 0x2d && this.lengths.has(length - 4);
    if (!this.lengths.has(length - 2) && !mayClose) return null;
    const text = buffer.toString('latin1', from + 2, end);
    const delimiter = this.depthOf.get(text) ?? -1;
    const closing = mayClose ? (this.depthOf.get(text.slice(0, -2)) ?? -1) : -1;
    if (delimiter < 0 && closing < 0) return null;
    return closing > delimiter ? { depth: closing, closing: true } : { depth: delimiter, closing: false };
  }
}

/** Scans the file and returns every leaf part of the top-level multipart tree (empty when not multipart). */
export async function scanLeafParts(file: string, topHeaderBlock: Buffer, bodyOffset: number): Promise<LeafPart[]> {
  const top = boundaryOf(parseHeaderBlock(topHeaderBlock).find((f) => f.name === 'content-type')?.value ?? '');
  if (!top) return [];
  const leaves: LeafPart[] = [];
  const stack = new MultipartStack();
  stack.push(top);
  let offset = bodyOffset;
  let linePrefix = Buffer.alloc(0);
  let lineStart = bodyOffset;
  // A part's header block is read line by line until the empty line.
  let pendingHeader: { frame: Frame; delimiterStart: number; lines: Buffer[]; size: number } | null = null;

  const closeLeaf = (frame: Frame, delimiterLineStart: number) => {
    if (!frame.open) return;
    const end = Math.max(frame.open.bodyStart, delimiterLineStart - 2);
    leaves.push({ ...frame.open, cutEnd: end, bodyEnd: end });
    frame.open = null;
  };

  /** The line's first bytes (at most 1024) are buffer[from, to); it spans [start, end) of the file. */
  const onLine = (buffer: Buffer, from: number, to: number, start: number, end: number) => {
    if (pendingHeader) {
      const prefix = buffer.subarray(from, to);
      if (prefix.length === 0 || (prefix.length === 1 && prefix[0] === 0x0d)) {
        const header = Buffer.concat(pendingHeader.lines);
        const info = describe(header);
        const frame = pendingHeader.frame;
        if (info.boundary) stack.push(info.boundary);
        else {
          const { boundary: _b, ...facts } = info;
          frame.open = { ...facts, cutStart: Math.max(bodyOffset, pendingHeader.delimiterStart - 2), bodyStart: end };
        }
        pendingHeader = null;
      } else if (pendingHeader.size < MAX_HEADER_BYTES) {
        pendingHeader.lines.push(Buffer.concat([prefix, Buffer.from('\n')]));
        pendingHeader.size += prefix.length + 1;
      }
      return;
    }
    if (to - from < 3 || buffer[from] !== 0x2d || buffer[from + 1] !== 0x2d) return;
    const match = stack.match(buffer, from, to);
    if (!match) return;
    // An outer boundary also ends every inner multipart (each frame is pushed and popped once: linear).
    while (stack.depth - 1 > match.depth) closeLeaf(stack.pop(), start);
    const frame = stack.frames[match.depth] as Frame;
    closeLeaf(frame, start);
    if (match.closing) {
      if (match.depth > 0) stack.pop();
    } else pendingHeader = { frame, delimiterStart: start, lines: [], size: 0 };
  };

  let lines = 0;
  let sliceStart = performance.now();
  for await (const chunk of createReadStream(file, { start: bodyOffset, highWaterMark: READ_CHUNK }) as AsyncIterable<Buffer>) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      const end = offset + nl + 1;
      // Only a part's header lines and lines starting with "--" matter; the rest costs no allocation.
      if (linePrefix.length > 0) {
        // A line begun in the previous chunk: its prefix is put together (once per chunk at most).
        const prefix = Buffer.concat([linePrefix, chunk.subarray(from, Math.min(nl, from + Math.max(0, 1024 - linePrefix.length)))]);
        onLine(prefix, 0, prefix.length, lineStart, end);
        linePrefix = EMPTY;
      } else if (pendingHeader || (nl - from >= 3 && chunk[from] === 0x2d && chunk[from + 1] === 0x2d)) {
        onLine(chunk, from, Math.min(nl, from + 1024), lineStart, end);
      }
      lineStart = end;
      from = nl + 1;
      if (++lines % LINES_PER_CHECK === 0 && performance.now() - sliceStart > YIELD_AFTER_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
    }
    if (from < chunk.length && linePrefix.length < 1024) linePrefix = Buffer.concat([linePrefix, chunk.subarray(from, from + 1024 - linePrefix.length)]);
    offset += chunk.length;
  }
  for (const frame of [...stack.frames].reverse()) closeLeaf(frame, offset + 2);
  return leaves;
}
