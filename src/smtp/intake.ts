/**
 * DATA stream -> spool. The stream goes straight to disk (never buffered whole): line endings are
 * normalised, the top-level header block (bounded) is rewritten, the rest is written as it comes.
 * The returned entry exists only once commit() made it durable; anything else aborts the write.
 */
import type { Readable } from 'node:stream';
import { parseHeaderBlock, startsWithHeaderField } from '../mime/header-block.js';
import { rewriteHeader, type TraceInfo } from '../mime/header-rewrite.js';
import { normalizeLineEndings } from '../mime/line-endings.js';
import type { SpoolEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';
import { replies, SmtpReply } from './replies.js';
import { resolveRecipients, type RouteChoice } from './routing.js';
import { headerSenderRefusal } from './sender-policy.js';
import { addressesIn } from '../mime/header-block.js';
import { LARGE_MESSAGE_BYTES, noteBytesMoved } from '../memory/buffer-turnover.js';

// Exchange Online caps the total header size at 256 KB (Office.InternetHeaders, graph-api-facts §1.8).
export const MAX_HEADER_BYTES = 256 * 1024;

export interface IntakeRequest {
  queueId: string;
  mailFrom: string;
  rcptTo: string[];
  /** Chooses the sending mailbox once the header From is known (routes); null refuses the message. */
  route: (headerFrom: string | null) => RouteChoice | null;
  trace: TraceInfo;
  authUser?: string;
  /** The AUTH user's allowedSenders: every header From and Sender address must match one. */
  allowedSenders?: readonly string[];
  maxMessageSize: number;
  headerOnlyRecipients?: 'skip' | 'deliver';
}

export interface IntakeResult {
  entry: SpoolEntry;
  route: RouteChoice;
  headerOnlyRecipients: string[];
  bcc: string[];
}

type DataStream = Readable & { sizeExceeded?: boolean };

const BLANK_LINE = Buffer.from('\r\n\r\n');

/** Drains what is left of the DATA stream so smtp-server can answer and the session continues. */
async function drain(stream: Readable): Promise<void> {
  for await (const _chunk of stream) {
    // discard
  }
}

export async function receiveMessage(stream: DataStream, request: IntakeRequest, spool: Spool): Promise<IntakeResult> {
  let writer;
  try {
    writer = await spool.beginMessage(request.queueId);
  } catch {
    await drain(stream);
    throw replies.spoolFailure();
  }

  const lineState = { previousWasCr: false };
  // The header block so far (null once it has been written out); bounded by MAX_HEADER_BYTES.
  let headerBuffer: Buffer | null = Buffer.alloc(0);
  let received = 0;
  let rewrite: ReturnType<typeof rewriteHeader> | null = null;
  let chosen: RouteChoice | null = null;
  let rcptTo = request.rcptTo;
  let refusal: SmtpReply | null = null;
  let storageError: unknown = null;

  const emitHeader = async (block: Buffer, rest: Buffer) => {
    const looksLikeHeader = startsWithHeaderField(block);
    const fields = looksLikeHeader ? parseHeaderBlock(block) : [];
    const fromField = fields.find((f) => f.name === 'from');
    const headerFrom = fromField ? (addressesIn(fromField.value)[0] ?? null) : null;
    chosen = request.route(headerFrom);
    if (!chosen) {
      refusal = replies.noSendingMailbox();
      return;
    }
    refusal = headerSenderRefusal(fields, chosen, request.allowedSenders);
    if (refusal) return;
    rcptTo = resolveRecipients(request.rcptTo, chosen.mailbox);
    rewrite = rewriteHeader(fields, rcptTo, request.trace, chosen.fromPolicy === 'rewrite' ? { mailbox: chosen.mailbox } : undefined, request.headerOnlyRecipients ?? 'skip');
    // Content that does not start with a header field is treated as body: our fields, a blank line, then it.
    await writer.write(looksLikeHeader ? Buffer.concat([rewrite.header, rest]) : Buffer.concat([rewrite.header, Buffer.from('\r\n'), block, rest]));
  };

  try {
    for await (const raw of stream) {
      if (refusal || storageError) continue; // keep draining so the client gets our reply
      received += (raw as Buffer).length;
      // Only a large message's bytes count: an alert of a few KB never triggers a collection.
      if (received > LARGE_MESSAGE_BYTES) noteBytesMoved((raw as Buffer).length);
      if (stream.sizeExceeded || received > request.maxMessageSize) {
        refusal = replies.tooBig(request.maxMessageSize);
        continue;
      }
      const chunk = normalizeLineEndings(raw as Buffer, lineState);
      try {
        if (headerBuffer === null) {
          await writer.write(chunk);
          continue;
        }
        // Resume the search for the blank line 3 bytes before the new data (it may straddle chunks).
        const searchFrom = Math.max(0, headerBuffer.length - 3);
        const pending = Buffer.concat([headerBuffer, chunk]);
        // An empty header block (data starts with CRLF) ends at once.
        const end = pending.subarray(0, 2).equals(BLANK_LINE.subarray(0, 2)) ? 0 : pending.indexOf(BLANK_LINE, searchFrom);
        if (end !== -1) {
          const blockEnd = end === 0 ? 0 : end + 2;
          headerBuffer = null;
          await emitHeader(pending.subarray(0, blockEnd), pending.subarray(blockEnd));
        } else if (pending.length > MAX_HEADER_BYTES) {
          refusal = replies.headerTooBig(MAX_HEADER_BYTES);
        } else {
          headerBuffer = pending;
        }
      } catch (err) {
        storageError = err;
      }
    }
    if (stream.sizeExceeded) refusal = replies.tooBig(request.maxMessageSize);
    if (!refusal && !storageError && headerBuffer !== null) {
      // The message ended inside its header block (no body): it is all header.
      const pending = headerBuffer;
      const block = pending.length === 0 || pending.subarray(-2).equals(BLANK_LINE.subarray(0, 2)) ? pending : Buffer.concat([pending, BLANK_LINE.subarray(0, 2)]);
      await emitHeader(block, Buffer.alloc(0)).catch((err: unknown) => {
        storageError = err;
      });
    }
    if (refusal) throw refusal;
    if (storageError || rewrite === null || chosen === null) throw replies.spoolFailure();
    const done: ReturnType<typeof rewriteHeader> = rewrite;
    const route: RouteChoice = chosen;
    const entry = await writer
      .commit({
        id: request.queueId,
        receivedAt: request.trace.receivedAt,
        envelope: { mailFrom: request.mailFrom, rcptTo },
        client: { address: request.trace.clientAddress, helo: request.trace.heloName, ...(request.authUser ? { authUser: request.authUser } : {}) },
        mailbox: route.mailbox,
        ...(route.graphProfile ? { graphProfile: route.graphProfile } : {}),
        messageId: done.messageId,
      })
      .catch(() => {
        throw replies.spoolFailure();
      });
    return { entry, route, headerOnlyRecipients: done.headerOnly, bcc: done.bcc };
  } catch (err) {
    await writer.abort().catch(() => undefined);
    await drain(stream).catch(() => undefined);
    throw err instanceof SmtpReply ? err : replies.spoolFailure();
  }
}
