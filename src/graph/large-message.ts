/**
 * Messages too large for one sendMail request (about 4 MB, graph-api-facts §1.5): the MIME goes in
 * as a draft with its big attachments taken out, each of those is added as a JSON attachment or
 * uploaded through an attachment upload session (in order, chunks under 4 MB, Content-Range, no
 * Authorization header on the pre-authenticated URL: graph-api-facts §2), then the draft is sent.
 * Everything streams from the spool file; the largest thing in memory is the draft (< 3 MB) or one
 * chunk (3 MiB). Needs Mail.ReadWrite besides Mail.Send (§2.3).
 *
 * Every request asks `mayStart` right before it leaves, so nothing reaches a paused mailbox. A
 * draft that is given up is handed to the clean-up queue (drafts.discard), never deleted here: the
 * DELETE is a request to the mailbox like any other and waits for the pause (issue 12, item 1).
 * A 429 or a transient failure mid-upload keeps the draft and the upload session: the next try
 * resumes from the session's nextExpectedRanges; only a lost draft or session (404) starts over.
 */
import { createReadStream } from 'node:fs';
import { readHeaderBlockFromFile } from '../mime/header-block.js';
import { chunksFrom, decodedBase64, decodedSize } from './base64-range.js';
import { MimeStructureError, scanLeafParts, type LeafPart } from '../mime/mime-structure.js';
import { heldOutcome, isHeld, LARGE_PATH_LOST, type GraphCall, type GraphOutcome } from './graph-call.js';

/** Graph's limit on one request body: "The maximum request length supported is 4MB" (graph-api-facts §1.5, I1/I2). */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/**
 * Headroom under that limit for what we do not count exactly (how Graph measures the request).
 * Without it a 3 MiB message is exactly 4 MiB of base64 and an attachment just under 3 MiB passes
 * 4 MiB once the JSON wrapper is added (issue 12, item 4).
 */
export const REQUEST_MARGIN = 4 * 1024;
/** Raw MIME whose base64 (4 characters per 3 bytes) still fits one request with the margin: 3,142,656 bytes. */
export const SINGLE_REQUEST_LIMIT = Math.floor((MAX_REQUEST_BYTES - REQUEST_MARGIN) / 4) * 3;
/**
 * Upload sessions are documented for attachments of 3 MB to 150 MB (graph-api-facts §2.1, §9);
 * from there on an attachment goes through a session even if its JSON would still fit. Third
 * parties saw sessions accepted from 2,097,152 bytes (§9), which is why a JSON request that would
 * pass the limit (never below 2 MiB decoded) may also take a session.
 */
export const UPLOAD_SESSION_FROM = 3_000_000;
/** 10 x 320 KiB: under Outlook's 4 MB guidance and a multiple of the OneDrive unit, which does no harm (§2.2). */
export const UPLOAD_CHUNK = 10 * 327_680;
/** Chunk failures retried (resumed) within one attempt before the attempt gives up and the scheduler retries. */
const CHUNK_RETRIES = 3;

/** Where a message's draft stands: kept between attempts so an upload resumes instead of starting over. */
export interface LargeProgress {
  draftId: string;
  /** Extracted parts already attached, in file order. */
  partsDone: number;
  /** The upload session of the part being uploaded, and the next byte it expects. */
  session?: { uploadUrl: string; next: number; size: number };
}

/** The draft of one queued message: its progress in memory, its existence persisted for clean-up. */
export interface DraftTracker {
  current(): LargeProgress | null;
  /** A draft now exists in the mailbox (recorded durably before anything else happens to it). */
  created(draftId: string): Promise<void>;
  progress(progress: LargeProgress): void;
  /** Give the draft up: the clean-up queue deletes it once the mailbox may be called. */
  discard(): Promise<void>;
  /** The draft was sent (Graph removes it from Drafts): nothing to clean up. */
  sent(): Promise<void>;
}

/** The 150 MB per 5 minutes upload budget of the app and mailbox (upload-budget.ts). */
export interface UploadPacer {
  /** When `bytes` more may be uploaded (now or later). */
  availableAt(bytes: number): number;
  record(bytes: number): void;
}

export interface LargeMessageHooks {
  /** Asked before every request and again right before it leaves: false while the mailbox is paused. */
  mayProceed: () => boolean;
  drafts: DraftTracker;
  pacer?: UploadPacer;
  now?: () => number;
  /** The token is a delegated one (password, deviceCode): permission hints name the delegated type. */
  delegated?: boolean;
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

/** The first offset of Outlook's NextExpectedRanges ("2097152" or "2097152-"; the key's case varies, §2.1). */
export function nextExpectedOffset(json: unknown): number | null {
  const body = json as { NextExpectedRanges?: unknown; nextExpectedRanges?: unknown } | null;
  const ranges = body?.NextExpectedRanges ?? body?.nextExpectedRanges;
  const first = Array.isArray(ranges) ? ranges[0] : undefined;
  const match = typeof first === 'string' ? /^(\d+)/.exec(first) : null;
  return match ? Number(match[1]) : null;
}

/** The exact length of the JSON fileAttachment request for this part (its base64 is 4 characters per 3 bytes). */
function jsonAttachmentRequest(name: string, part: LeafPart, isInline: boolean, decoded: number): { wrapper: string; length: number } {
  const wrapper = JSON.stringify({ '@odata.type': '#microsoft.graph.fileAttachment', name, contentType: part.contentType, contentBytes: '', isInline, ...(part.contentId ? { contentId: part.contentId } : {}) });
  return { wrapper, length: Buffer.byteLength(wrapper) + Math.ceil(decoded / 3) * 4 };
}

/** Whether a decoded attachment goes through an upload session (true) or one JSON request. */
export function needsUploadSession(decoded: number, jsonRequestLength: number): boolean {
  return decoded >= UPLOAD_SESSION_FROM || jsonRequestLength > MAX_REQUEST_BYTES - REQUEST_MARGIN;
}

const at = (o: GraphOutcome, step: string): LargeOutcome => ({ ...o, step });
const ok = (o: GraphOutcome, ...statuses: number[]) => o.kind === 'http' && statuses.includes(o.status);
const lost = (o: GraphOutcome, step: string): LargeOutcome => ({ kind: 'http', status: 404, code: LARGE_PATH_LOST, message: `${step}: ${o.kind === 'http' ? `${o.code ?? ''} ${o.message ?? ''}`.trim() : ''}`, retryAfterMs: null, step });
/** Worth resuming within the attempt: the request may simply not have arrived, or Graph was busy for a moment. */
const resumable = (o: GraphOutcome) => o.kind === 'network' || (o.kind === 'http' && (o.status === 408 || o.status === 409 || o.status === 416 || o.status === 423 || (o.status >= 500 && o.retryAfterMs === null)));

interface Plan {
  draftMime: Buffer;
  parts: Array<{ part: LeafPart; name: string; isInline: boolean; size: number }>;
}

async function plan(file: string, fileSize: number): Promise<Plan | LargeOutcome> {
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
  const parts = [];
  for (const part of extracted) {
    const isInline = part.disposition === 'inline' || (part.disposition === null && part.contentId !== null);
    parts.push({ part, name: part.filename ?? `attachment-${part.cutStart}`, isInline, size: await decodedSize(file, part.bodyStart, part.bodyEnd) });
  }
  return { draftMime, parts };
}

export async function sendLargeMessage(graph: GraphCall, mailbox: string, file: string, fileSize: number, token: string, hooks: LargeMessageHooks): Promise<LargeOutcome> {
  const planned = await plan(file, fileSize);
  if (!('draftMime' in planned)) return planned;
  // A lost draft or session (404) is started over once within the attempt; a second loss goes back
  // to the scheduler as a transient failure, which starts a fresh draft at the next attempt.
  let outcome = await buildAndSend(graph, mailbox, file, planned, token, hooks);
  if (outcome.kind === 'http' && outcome.code === LARGE_PATH_LOST) {
    await hooks.drafts.discard();
    outcome = await buildAndSend(graph, mailbox, file, planned, token, hooks);
  }
  if (outcome.kind === 'http' && outcome.code === LARGE_PATH_LOST) await hooks.drafts.discard();
  return outcome;
}

async function buildAndSend(graph: GraphCall, mailbox: string, file: string, planned: Plan, token: string, hooks: LargeMessageHooks): Promise<LargeOutcome> {
  const now = hooks.now ?? Date.now;
  const mayStart = hooks.mayProceed;
  const base = `/users/${encodeURIComponent(mailbox)}/messages`;
  // Pace uploads (150 MB per 5 minutes per app and mailbox, §3.2): wait for room for the whole
  // message before starting, so a burst of big scans queues instead of hitting the wall half-way.
  const bytesToUpload = planned.draftMime.length + planned.parts.reduce((sum, p) => sum + p.size, 0);
  if (hooks.pacer && !hooks.drafts.current()) {
    const availableAt = hooks.pacer.availableAt(bytesToUpload);
    if (availableAt > now()) return at(heldOutcome(availableAt - now()), 'paced');
  }
  const upload = (bytes: number) => hooks.pacer?.record(bytes);

  let progress = hooks.drafts.current();
  if (!progress) {
    if (!mayStart()) return at(heldOutcome(), 'paused');
    const body = planned.draftMime.toString('base64');
    const draft = await graph.call('POST', base, token, { body, contentType: 'text/plain', mayStart });
    if (!ok(draft.outcome, 201)) {
      const o = draft.outcome;
      if (o.kind === 'http' && o.status === 403 && !isHeld(o)) {
        // The permission type follows the sign-in in use: application for app-only methods, delegated for password / deviceCode (§2.3).
        const grant = hooks.delegated
          ? 'grant Mail.ReadWrite (delegated) with admin consent and sign in again (`smtp-graph-relay login` for deviceCode); delegated upload sessions work only in the signed-in user\'s own mailbox'
          : 'grant Mail.ReadWrite (application) with admin consent';
        return { ...o, message: `creating a draft needs Mail.ReadWrite: messages over ${SINGLE_REQUEST_LIMIT} bytes are sent as a draft with attachments or upload sessions, so ${grant}${o.message ? ` (${o.message})` : ''}`, step: 'createDraft' };
      }
      return at(o, 'createDraft');
    }
    upload(body.length);
    const draftId = String((draft.json as { id?: unknown } | null)?.id ?? '');
    await hooks.drafts.created(draftId);
    progress = { draftId, partsDone: 0 };
    hooks.drafts.progress(progress);
  }
  const draftPath = `${base}/${encodeURIComponent(progress.draftId)}`;

  for (let index = progress.partsDone; index < planned.parts.length; index += 1) {
    const { part, name, isInline, size } = planned.parts[index] as Plan['parts'][number];
    const json = jsonAttachmentRequest(name, part, isInline, size);
    if (!needsUploadSession(size, json.length)) {
      if (!mayStart()) return at(heldOutcome(), 'paused');
      // Small enough for one request (graph-api-facts §1.2): the decoded bytes, base64-encoded again.
      let bytes: Buffer = Buffer.alloc(0);
      for await (const whole of chunksFrom(decodedBase64(file, part.bodyStart, part.bodyEnd), 0, Math.max(size, 1))) bytes = whole;
      const body = json.wrapper.replace('"contentBytes":""', `"contentBytes":"${bytes.toString('base64')}"`);
      const added = await graph.call('POST', `${draftPath}/attachments`, token, { body, contentType: 'application/json', mayStart });
      if (ok(added.outcome, 404)) return lost(added.outcome, 'addAttachment');
      if (!ok(added.outcome, 201)) return failedStep(added.outcome, 'addAttachment', hooks);
      upload(body.length);
    } else {
      if (!progress.session) {
        if (!mayStart()) return at(heldOutcome(), 'paused');
        const session = await graph.call('POST', `${draftPath}/attachments/createUploadSession`, token, {
          body: JSON.stringify({ AttachmentItem: { attachmentType: 'file', name, size, contentType: part.contentType, isInline, ...(part.contentId ? { contentId: part.contentId } : {}) } }),
          contentType: 'application/json',
          mayStart,
        });
        const uploadUrl = (session.json as { uploadUrl?: unknown } | null)?.uploadUrl;
        if (ok(session.outcome, 404)) return lost(session.outcome, 'createUploadSession');
        if (!ok(session.outcome, 201) || typeof uploadUrl !== 'string') return failedStep(session.outcome, 'createUploadSession', hooks);
        progress.session = { uploadUrl, next: nextExpectedOffset(session.json) ?? 0, size };
        hooks.drafts.progress(progress);
      }
      const uploaded = await uploadPart(graph, file, part, progress.session, hooks, upload);
      if (uploaded !== 'done') return uploaded;
      delete progress.session;
    }
    progress.partsDone = index + 1;
    hooks.drafts.progress(progress);
  }
  if (!mayStart()) return at(heldOutcome(), 'paused');
  const sent = await graph.call('POST', `${draftPath}/send`, token, { body: '', contentType: 'application/json', mayStart });
  if (ok(sent.outcome, 404)) return lost(sent.outcome, 'send');
  if (!ok(sent.outcome, 202)) return failedStep(sent.outcome, 'send', hooks);
  await hooks.drafts.sent();
  return at(sent.outcome, 'send');
}

/**
 * A step failed: a pause (429, held) or a transient failure keeps the draft for the next attempt;
 * anything else gives the draft up (the clean-up queue deletes it) and the next attempt starts over.
 */
async function failedStep(o: GraphOutcome, step: string, hooks: LargeMessageHooks): Promise<LargeOutcome> {
  const keep = isHeld(o) || o.kind === 'network' || (o.kind === 'http' && (o.status === 429 || o.status === 408 || o.status === 409 || o.status === 423 || o.status >= 500));
  if (!keep) await hooks.drafts.discard();
  return at(o, step);
}

/** Uploads one part from session.next on, resuming after a transient failure from what the session expects next. */
async function uploadPart(graph: GraphCall, file: string, part: LeafPart, session: NonNullable<LargeProgress['session']>, hooks: LargeMessageHooks, upload: (bytes: number) => void): Promise<'done' | LargeOutcome> {
  const mayStart = hooks.mayProceed;
  let failures = 0;
  for (;;) {
    let resumeFrom: number | null = null;
    for await (const chunk of chunksFrom(decodedBase64(file, part.bodyStart, part.bodyEnd), session.next, UPLOAD_CHUNK)) {
      if (!mayStart()) return at(heldOutcome(), 'paused');
      const end = session.next + chunk.length - 1;
      // The upload URL is pre-authenticated: no bearer token (graph-api-facts §2.1 step 3).
      const put = await graph.call('PUT', session.uploadUrl, null, { body: chunk, contentType: 'application/octet-stream', headers: { 'content-range': `bytes ${session.next}-${end}/${session.size}` }, mayStart });
      if (ok(put.outcome, 201)) {
        upload(chunk.length);
        return 'done';
      }
      if (ok(put.outcome, 200)) {
        upload(chunk.length);
        const expected = nextExpectedOffset(put.json) ?? end + 1;
        session.next = expected;
        if (expected !== end + 1) {
          resumeFrom = expected;
          break;
        }
        continue;
      }
      if (ok(put.outcome, 404)) return lost(put.outcome, 'upload');
      if (!resumable(put.outcome) || (failures += 1) > CHUNK_RETRIES) return failedStep(put.outcome, 'upload', hooks);
      // Where does the session stand? Outlook's answers carry nextExpectedRanges (§2.1); a GET of
      // the upload URL answers the same where it is supported. Otherwise the last answer's offset holds.
      if (!mayStart()) return at(heldOutcome(), 'paused');
      const status = await graph.call('GET', session.uploadUrl, null, { mayStart });
      if (ok(status.outcome, 404)) return lost(status.outcome, 'upload');
      if (ok(status.outcome, 200)) session.next = nextExpectedOffset(status.json) ?? session.next;
      resumeFrom = session.next;
      break;
    }
    if (resumeFrom === null) {
      // The stream ended without a 201: the session expected more than the part holds.
      return failedStep({ kind: 'http', status: 400, code: 'RelayUploadIncomplete', message: `the upload session expects byte ${session.next} of ${session.size}`, retryAfterMs: null }, 'upload', hooks);
    }
  }
}
