/**
 * Messages too large for one sendMail request (about 4 MB, graph-api-facts §1.5): the MIME goes in
 * as a draft with its big attachments taken out, each of those is uploaded through an attachment
 * upload session (3-150 MB, in order, chunks under 4 MB, Content-Range, no Authorization header on
 * the pre-authenticated URL: graph-api-facts §2), then the draft is sent. Everything streams from the
 * spool file; the largest thing in memory is the draft (< 3 MB) or one chunk (3 MiB).
 * Needs Mail.ReadWrite besides Mail.Send (§2.3).
 */
import { createReadStream } from 'node:fs';
import { readHeaderBlockFromFile } from '../mime/header-block.js';
import { MimeStructureError, scanLeafParts, type LeafPart } from '../mime/mime-structure.js';
import type { GraphCall, GraphOutcome } from './graph-call.js';

/** Raw MIME that still fits one request once base64-encoded (4 MiB). */
export const SINGLE_REQUEST_LIMIT = 3 * 1024 * 1024;
/** Upload sessions are for attachments of 3 MB or more (ErrorAttachmentSizeShouldNotBeLessThanMinimumSize below). */
const UPLOAD_SESSION_MINIMUM = 3 * 1024 * 1024;
/** 10 x 320 KiB: under Outlook's 4 MB guidance and a multiple of the OneDrive unit, which does no harm (§2.2). */
export const UPLOAD_CHUNK = 10 * 327_680;

export interface LargeMessageHooks {
  /** Checked before every request: a Retry-After for the mailbox stops the attempt (no request before it passes). */
  mayProceed: () => boolean;
}

export type LargeOutcome = GraphOutcome & { step?: string };

/** The file with the given byte ranges left out (ranges sorted, non-overlapping). */
async function withoutRanges(file: string, size: number, cuts: Array<[number, number]>): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let position = 0;
  for (const [start, end] of [...cuts, [size, size] as [number, number]]) {
    if (start > position) {
      for await (const chunk of createReadStream(file, { start: position, end: start - 1 }) as AsyncIterable<Buffer>) pieces.push(chunk);
    }
    position = end;
  }
  return Buffer.concat(pieces);
}

const BASE64_CHAR = /[A-Za-z0-9+/]/;

/** Streams a base64 body range as decoded bytes, in pieces of any size. */
async function* decodedBase64(file: string, start: number, end: number): AsyncGenerator<Buffer> {
  if (end <= start) return;
  let carry = '';
  for await (const chunk of createReadStream(file, { start, end: end - 1, highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
    const text = carry + chunk.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, '');
    const usable = text.length - (text.length % 4);
    carry = text.slice(usable);
    if (usable > 0) yield Buffer.from(text.slice(0, usable), 'base64');
  }
  if (carry.replace(/=/g, '').length > 0) yield Buffer.from(carry, 'base64');
}

async function decodedSize(file: string, part: LeafPart): Promise<number> {
  let size = 0;
  for await (const piece of decodedBase64(file, part.bodyStart, part.bodyEnd)) size += piece.length;
  return size;
}

/** Re-chunks a byte stream into pieces of exactly `size` (the last may be shorter). */
async function* chunked(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  for await (const piece of source) {
    pending.push(piece);
    length += piece.length;
    while (length >= size) {
      const all = Buffer.concat(pending);
      yield all.subarray(0, size);
      pending = [all.subarray(size)];
      length -= size;
    }
  }
  if (length > 0) yield Buffer.concat(pending);
}

const networkOrHttp = (o: LargeOutcome, step: string): LargeOutcome => ({ ...o, step });

/** A Retry-After for the mailbox arrived mid-way: stop without another request (attempt.ts postpones). */
const paused = (): LargeOutcome => ({ kind: 'http', status: 429, code: 'RelayPaused', retryAfterMs: null, step: 'paused' });

export async function sendLargeMessage(graph: GraphCall, mailbox: string, file: string, fileSize: number, token: string, hooks: LargeMessageHooks): Promise<LargeOutcome> {
  const { header, bodyOffset } = await readHeaderBlockFromFile(file);
  let leaves: LeafPart[];
  try {
    leaves = (await scanLeafParts(file, header, bodyOffset)).filter((p) => p.transferEncoding === 'base64');
  } catch (err) {
    // A structure the scan refuses fails permanently (classify: other 4xx), with the reason, before any request.
    if (err instanceof MimeStructureError) return { kind: 'http', status: 422, code: 'RelayMimeTooDeep', message: err.message, retryAfterMs: null, step: 'split' };
    throw err;
  }
  // Take out the largest base64 parts until the rest fits one request.
  const extracted: LeafPart[] = [];
  let remaining = fileSize;
  for (const part of [...leaves].sort((a, b) => b.cutEnd - b.cutStart - (a.cutEnd - a.cutStart))) {
    if (remaining <= SINGLE_REQUEST_LIMIT) break;
    extracted.push(part);
    remaining -= part.cutEnd - part.cutStart;
  }
  if (remaining > SINGLE_REQUEST_LIMIT) {
    return { kind: 'http', status: 413, code: 'RelayCannotSplit', message: `the message is ${fileSize} bytes and ${remaining} bytes remain after taking out every base64 attachment: too large for one Graph request`, retryAfterMs: null, step: 'split' };
  }
  extracted.sort((a, b) => a.cutStart - b.cutStart);
  const draftMime = await withoutRanges(file, fileSize, extracted.map((p) => [p.cutStart, p.cutEnd]));

  const base = `/users/${encodeURIComponent(mailbox)}/messages`;
  if (!hooks.mayProceed()) return paused();
  const draft = await graph.call('POST', base, token, { body: draftMime.toString('base64'), contentType: 'text/plain' });
  if (draft.outcome.kind !== 'http' || draft.outcome.status !== 201) {
    const o = draft.outcome;
    if (o.kind === 'http' && o.status === 403) {
      return { ...o, message: `creating a draft needs Mail.ReadWrite: messages over ${SINGLE_REQUEST_LIMIT} bytes are sent as a draft with upload sessions, so grant Mail.ReadWrite (application) with admin consent${o.message ? ` (${o.message})` : ''}`, step: 'createDraft' };
    }
    return networkOrHttp(o, 'createDraft');
  }
  const draftId = String((draft.json as { id?: unknown } | null)?.id ?? '');
  const abandon = async (outcome: LargeOutcome): Promise<LargeOutcome> => {
    // Leave no half-built draft behind in the mailbox; a retry starts from scratch.
    await graph.call('DELETE', `${base}/${encodeURIComponent(draftId)}`, token).catch(() => undefined);
    return outcome;
  };

  for (const part of extracted) {
    const name = part.filename ?? `attachment-${part.cutStart}`;
    const size = await decodedSize(file, part);
    const isInline = part.disposition === 'inline' || (part.disposition === null && part.contentId !== null);
    if (!hooks.mayProceed()) return abandon(paused());
    if (size < UPLOAD_SESSION_MINIMUM) {
      // Small enough for one request: the base64 text goes in as it is (graph-api-facts §1.2).
      const chunks: Buffer[] = [];
      for await (const piece of decodedBase64(file, part.bodyStart, part.bodyEnd)) chunks.push(piece);
      const added = await graph.call('POST', `${base}/${encodeURIComponent(draftId)}/attachments`, token, {
        body: JSON.stringify({ '@odata.type': '#microsoft.graph.fileAttachment', name, contentType: part.contentType, contentBytes: Buffer.concat(chunks).toString('base64'), isInline, ...(part.contentId ? { contentId: part.contentId } : {}) }),
        contentType: 'application/json',
      });
      if (added.outcome.kind !== 'http' || added.outcome.status !== 201) return abandon(networkOrHttp(added.outcome, 'addAttachment'));
      continue;
    }
    const session = await graph.call('POST', `${base}/${encodeURIComponent(draftId)}/attachments/createUploadSession`, token, {
      body: JSON.stringify({ AttachmentItem: { attachmentType: 'file', name, size, contentType: part.contentType, isInline, ...(part.contentId ? { contentId: part.contentId } : {}) } }),
      contentType: 'application/json',
    });
    const uploadUrl = (session.json as { uploadUrl?: unknown } | null)?.uploadUrl;
    if (session.outcome.kind !== 'http' || session.outcome.status !== 201 || typeof uploadUrl !== 'string') return abandon(networkOrHttp(session.outcome, 'createUploadSession'));
    let position = 0;
    for await (const chunk of chunked(decodedBase64(file, part.bodyStart, part.bodyEnd), UPLOAD_CHUNK)) {
      const end = position + chunk.length - 1;
      // The upload URL is pre-authenticated: no bearer token (graph-api-facts §2.1 step 3).
      const put = await graph.call('PUT', uploadUrl, null, { body: chunk, contentType: 'application/octet-stream', headers: { 'content-range': `bytes ${position}-${end}/${size}` } });
      const ok = put.outcome.kind === 'http' && (put.outcome.status === 200 || put.outcome.status === 201);
      if (!ok) return abandon(networkOrHttp(put.outcome, 'upload'));
      position = end + 1;
    }
  }
  if (!hooks.mayProceed()) return abandon(paused());
  const sent = await graph.call('POST', `${base}/${encodeURIComponent(draftId)}/send`, token, { body: '', contentType: 'application/json' });
  if (sent.outcome.kind !== 'http' || sent.outcome.status !== 202) return abandon(networkOrHttp(sent.outcome, 'send'));
  return { ...sent.outcome, step: 'send' };
}
