/**
 * The message shape that froze the relay's MIME scan (issue 11, item 13): multiparts nested `depth`
 * levels, then a text part full of lines that start with "--" but delimit nothing (each compared
 * with the whole multipart stack by the old scan), then one base64 attachment the large-message
 * path takes out. Padded with "--" lines to exactly `totalBytes`.
 */
import { randomBytes } from 'node:crypto';

export interface CraftedMessage {
  mime: Buffer;
  attachment: Buffer;
}

export function craftNestedMessage(options: { depth: number; totalBytes: number; testId: string; attachmentBytes?: number }): CraftedMessage {
  const { depth, totalBytes, testId } = options;
  const attachment = randomBytes(options.attachmentBytes ?? 600_000);
  const head = `From: alerts@contoso.example\r\nTo: ops@contoso.example\r\nSubject: nested ${depth}\r\nX-Test-Id: ${testId}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n`;
  let opening = '';
  for (let level = 1; level < depth; level++) opening += `--b${level - 1}\r\nContent-Type: multipart/mixed; boundary="b${level}"\r\n\r\n`;
  const inner = `b${depth - 1}`;
  const textHead = `--${inner}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const base64 = (attachment.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  const attachmentPart = `\r\n--${inner}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="report.bin"\r\n\r\n${base64}\r\n`;
  let closing = '';
  for (let level = depth - 1; level >= 0; level--) closing += `--b${level}--\r\n`;
  const fixed = Buffer.byteLength(head + opening + textHead + attachmentPart + closing);
  const line = '--x\r\n';
  const fill = totalBytes - fixed;
  if (fill < 0) throw new Error(`a message of depth ${depth} needs more than ${totalBytes} bytes`);
  // Whole "--x" lines, then the remainder as one plain line (no line may start a delimiter).
  const dashes = line.repeat(Math.floor(fill / line.length)) + 'y'.repeat(fill % line.length);
  const mime = Buffer.from(head + opening + textHead + dashes + attachmentPart + closing, 'latin1');
  return { mime, attachment };
}
