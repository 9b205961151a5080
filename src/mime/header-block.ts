/**
 * Top-level header block parsing at the byte level. Fields keep their raw bytes so that what we
 * pass through is byte-for-byte what the sender wrote; only the decoded value is used for decisions.
 */
import { open } from 'node:fs/promises';
import addressparser from 'nodemailer/lib/addressparser/index.js';

export interface HeaderField {
  /** Lower-case field name; '' for a line that is not a header field (kept as is). */
  name: string;
  /** The raw bytes including folded continuation lines and the final CRLF. */
  raw: Buffer;
  /** The unfolded value decoded as UTF-8 (SMTPUTF8 headers are UTF-8, RFC 6532). */
  value: string;
}

const FIELD_NAME = /^([!-9;-~]+)[ \t]*:/;

/** True when the data starts like a header block (first line is "Name: value"). */
export function startsWithHeaderField(data: Buffer): boolean {
  const firstLineEnd = data.indexOf('\r\n');
  const firstLine = data.subarray(0, firstLineEnd === -1 ? Math.min(data.length, 1000) : firstLineEnd).toString('latin1');
  return FIELD_NAME.test(firstLine);
}

/** Splits a header block (CRLF line endings, without the blank separator line) into fields. */
export function parseHeaderBlock(block: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  let start = 0;
  while (start < block.length) {
    let end = block.indexOf('\r\n', start);
    end = end === -1 ? block.length : end + 2;
    const firstByte = block[start];
    const isContinuation = firstByte === 0x20 || firstByte === 0x09;
    const last = fields[fields.length - 1];
    if (isContinuation && last) {
      last.raw = Buffer.concat([last.raw, block.subarray(start, end)]);
    } else {
      fields.push({ name: '', raw: block.subarray(start, end), value: '' });
    }
    start = end;
  }
  for (const field of fields) {
    const text = field.raw.toString('utf8');
    const match = FIELD_NAME.exec(text);
    if (match) {
      field.name = (match[1] as string).toLowerCase();
      field.value = text.slice(match[0].length).replace(/\r\n(?=[ \t])/g, '').replace(/\r\n$/, '').trim();
    }
  }
  return fields;
}

/** Every mailbox address in an address-list header value, lower-cased (groups flattened). */
export function addressesIn(value: string): string[] {
  return addressparser(value, { flatten: true })
    .map((entry) => entry.address?.toLowerCase())
    .filter((address): address is string => Boolean(address));
}

/** The top-level header block of a spooled message file (at most 512 KiB read) and where the body starts. */
export async function readHeaderBlockFromFile(file: string): Promise<{ header: Buffer; bodyOffset: number }> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(512 * 1024);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    const data = buffer.subarray(0, bytesRead);
    const end = data.indexOf('\r\n\r\n');
    if (end === -1) return { header: data, bodyOffset: bytesRead };
    return { header: data.subarray(0, end + 2), bodyOffset: end + 4 };
  } finally {
    await handle.close();
  }
}
