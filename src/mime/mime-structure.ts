/**
 * A streaming structural scan of a spooled MIME message: where each leaf part's headers and body
 * start and end (byte offsets), with the attachment facts Graph's upload sessions need. Nothing is
 * decoded and at most one line prefix is held, so a 60 MB message costs a few KiB of memory.
 * Used by the large-message path to take big attachments out of the MIME and upload them apart.
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
}

const MAX_HEADER_BYTES = 64 * 1024;

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

/** Scans the file and returns every leaf part of the top-level multipart tree (empty when not multipart). */
export async function scanLeafParts(file: string, topHeaderBlock: Buffer, bodyOffset: number): Promise<LeafPart[]> {
  const top = boundaryOf(parseHeaderBlock(topHeaderBlock).find((f) => f.name === 'content-type')?.value ?? '');
  if (!top) return [];
  const leaves: LeafPart[] = [];
  const stack: Frame[] = [{ boundary: top, open: null }];
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

  const onLine = (prefix: Buffer, start: number, end: number) => {
    if (pendingHeader) {
      if (prefix.length === 0 || (prefix.length === 1 && prefix[0] === 0x0d)) {
        const header = Buffer.concat(pendingHeader.lines);
        const info = describe(header);
        const frame = pendingHeader.frame;
        if (info.boundary) stack.push({ boundary: info.boundary, open: null });
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
    if (prefix.length < 3 || prefix[0] !== 0x2d || prefix[1] !== 0x2d) return;
    const line = prefix.toString('latin1').replace(/\r$/, '').replace(/[ \t]+$/, '');
    for (let depth = stack.length - 1; depth >= 0; depth--) {
      const frame = stack[depth] as Frame;
      if (line === `--${frame.boundary}` || line === `--${frame.boundary}--`) {
        // An outer boundary also ends every inner multipart.
        while (stack.length - 1 > depth) {
          const inner = stack.pop() as Frame;
          closeLeaf(inner, start);
        }
        closeLeaf(frame, start);
        if (line === `--${frame.boundary}--`) {
          if (depth > 0) stack.pop();
        } else pendingHeader = { frame, delimiterStart: start, lines: [], size: 0 };
        return;
      }
    }
  };

  for await (const chunk of createReadStream(file, { start: bodyOffset, highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl);
      const prefix = linePrefix.length > 0 ? Buffer.concat([linePrefix, piece.subarray(0, Math.max(0, 1024 - linePrefix.length))]) : piece.subarray(0, 1024);
      const end = offset + nl + 1;
      onLine(prefix, lineStart, end);
      linePrefix = Buffer.alloc(0);
      lineStart = end;
      from = nl + 1;
    }
    if (from < chunk.length && linePrefix.length < 1024) linePrefix = Buffer.concat([linePrefix, chunk.subarray(from, from + 1024 - linePrefix.length)]);
    offset += chunk.length;
  }
  for (const frame of stack.reverse()) closeLeaf(frame, offset + 2);
  return leaves;
}
