/**
 * The Microsoft Graph mail half of the emulator: sendMail (MIME and JSON), drafts, attachments,
 * upload sessions and send, GET /users/{id}; Graph's error shape with request-id; Outlook's
 * per-mailbox limits (4 concurrent requests, a 4 MB request body) and a check that nobody
 * sends to a mailbox before its Retry-After has passed (graph-api-facts §1-3, §8).
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { addressesIn, parseHeaderBlock } from '../mime/header-block.js';

export interface EmulatedMailbox {
  upn: string;
  displayName: string;
  /** Addresses this mailbox may send as (besides itself), when sendAs is enforced. */
  sendAs?: string[];
  /** false: the mailbox is inactive / on-premises (404 MailboxNotEnabledForRESTAPI). */
  restEnabled?: boolean;
  /** The tenant the mailbox lives in (default: any); tokens of other tenants do not see it. */
  tenantId?: string;
  /** true: outside the app's application access policy / RBAC scope (403 "Access to OData is disabled."). */
  outsideAppScope?: boolean;
}

export interface DeliveredAttachment {
  name: string;
  contentType: string;
  isInline: boolean;
  contentId?: string;
  bytes: Buffer;
}

export interface DeliveredMessage {
  seq: number;
  mailbox: string;
  /** Recipients Graph would send to: To, Cc and Bcc of the MIME (or the JSON recipients). */
  recipients: string[];
  via: 'mime' | 'json' | 'draft';
  mime?: Buffer;
  json?: Record<string, unknown>;
  attachments: DeliveredAttachment[];
  requestId: string;
  at: number;
  /** The delegated user or app that sent it. */
  sentBy: string;
}

export interface GraphError {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
}

export function graphErrorBody(requestId: string, clientRequestId: string | undefined, code: string, message: string) {
  return { error: { code, message, innerError: { date: new Date().toISOString().replace(/\.\d+Z$/, ''), 'request-id': requestId, 'client-request-id': clientRequestId ?? requestId } } };
}

/** Graph takes MIME recipients from the top-level To, Cc and Bcc fields. */
export function mimeRecipients(mime: Buffer): string[] {
  const end = mime.indexOf('\r\n\r\n');
  const block = end === -1 ? mime : mime.subarray(0, end + 2);
  const fields = parseHeaderBlock(block);
  return [...new Set(fields.filter((f) => f.name === 'to' || f.name === 'cc' || f.name === 'bcc').flatMap((f) => addressesIn(f.value)))];
}

/**
 * The addresses Exchange treats as the sender: the From address, and - a quirk users of other
 * relays hit - an address-like display name ("printer@contoso.com" <relay@...>) as well.
 */
export function mimeFromCandidates(mime: Buffer): string[] {
  const end = mime.indexOf('\r\n\r\n');
  const fields = parseHeaderBlock(end === -1 ? mime : mime.subarray(0, end + 2));
  const from = fields.find((f) => f.name === 'from');
  if (!from) return [];
  const address = addressesIn(from.value)[0];
  const displayAddress = /"?([^"<\s]+@[^"<\s]+)"?\s*</.exec(from.value)?.[1]?.toLowerCase();
  return [...new Set([address, displayAddress].filter((a): a is string => Boolean(a)))];
}

export class GraphMailState extends EventEmitter {
  readonly mailboxes = new Map<string, EmulatedMailbox>();
  readonly delivered: DeliveredMessage[] = [];
  readonly drafts = new Map<string, { mailbox: string; mime?: Buffer; json?: Record<string, unknown>; attachments: DeliveredAttachment[] }>();
  readonly uploads = new Map<string, { mailbox: string; draftId: string; name: string; size: number; contentType: string; isInline: boolean; contentId?: string; chunks: Buffer[]; next: number; authHeaderSeen: boolean }>();

  /** The mailbox of every upload session ever opened (a late request to a finished session still counts against it). */
  readonly uploadMailboxes = new Map<string, string>();
  /** Upload sessions accepted from 2 MiB (graph-api-facts §9). */
  uploadSessionMinimum = 2 * 1024 * 1024;
  /** Outlook allows four concurrent requests per app and mailbox (graph-api-facts §3.2). */
  concurrencyLimit = 4;
  /** "The maximum request length supported is 4MB" (graph-api-facts §1.5). */
  maxRequestBytes = 4 * 1024 * 1024;
  latencyMs = 0;
  /** When true, a From other than the mailbox (or its sendAs list) gets 403 ErrorSendAsDenied. */
  enforceSendAs = false;

  readonly inFlight = new Map<string, number>();
  readonly maxInFlightSeen = new Map<string, number>();
  /** 429s the emulator produced because a client exceeded the concurrency limit (self-inflicted throttling). */
  concurrencyThrottles = 0;
  /**
   * A request already on its way when a Retry-After left is not a violation: only requests that
   * started later than this after the throttling answer count. The relay holds every request back
   * until the moment its first byte is written (http-transport.ts), so what arrives inside this
   * window was written before the relay could read the answer: one loopback hop and one turn of a
   * busy event loop shared by relay and emulator in the tests. A request that waited for a new
   * connection is dated from the connection's acceptance (requestStartedAt in server.ts).
   */
  retryAfterGraceMs = 100;
  /** The latest a request arrived inside the grace after a Retry-After (tests print it, to see how close they run). */
  graceUsedMs = 0;
  /** Per mailbox: when we last sent a Retry-After, and until when it holds. */
  private readonly throttledAt = new Map<string, number>();
  /** Per mailbox: no request expected before this time (a Retry-After we sent). */
  readonly notBefore = new Map<string, number>();
  /** Every request that reached a mailbox before its Retry-After had passed, on every route (tests assert none). */
  readonly retryAfterViolations: Array<{ mailbox: string; earlyByMs: number; route: string }> = [];
  /** Every Graph request: when it came in and (doneAt) when its answer left. */
  readonly requests: Array<{ route: string; mailbox: string | null; at: number; status: number; authorization: boolean; doneAt?: number }> = [];
  uploadAuthorizationHeaders = 0;
  /** Drafts a client deleted (the relay cleans up after a failed large-message attempt). */
  deletedDrafts = 0;
  private seq = 0;

  constructor(private readonly outDir: string | null) {
    super();
    if (outDir) mkdirSync(outDir, { recursive: true });
  }

  addMailbox(mailbox: EmulatedMailbox): void {
    this.mailboxes.set(mailbox.upn.toLowerCase(), mailbox);
  }

  record(message: Omit<DeliveredMessage, 'seq' | 'at'>): DeliveredMessage {
    const full: DeliveredMessage = { ...message, seq: ++this.seq, at: Date.now() };
    this.delivered.push(full);
    if (this.outDir) {
      const base = path.join(this.outDir, `${String(full.seq).padStart(6, '0')}-${full.requestId}`);
      if (full.mime) writeFileSync(`${base}.eml`, full.mime);
      else writeFileSync(`${base}.json`, JSON.stringify(full.json, null, 2));
      for (const [i, att] of full.attachments.entries()) writeFileSync(`${base}.att${i}-${att.name.replace(/[^\w.-]/g, '_')}`, att.bytes);
    }
    this.emit('delivered', full);
    return full;
  }

  /**
   * Forgets what was delivered and requested so far (the messages' bytes with them). A benchmark
   * that has relayed tens of thousands of messages and a 60 MB attachment otherwise carries them
   * all on the emulator's heap, and its garbage collection then delays answers in later figures.
   * The most requests seen in flight per mailbox start again too: a figure reports its own.
   */
  forgetHistory(): void {
    this.delivered.length = 0;
    this.requests.length = 0;
    this.maxInFlightSeen.clear();
  }

  /** Resolves once at least `count` messages have been delivered (or rejects after timeoutMs). */
  waitForDelivered(count: number, timeoutMs = 30_000): Promise<DeliveredMessage[]> {
    if (this.delivered.length >= count) return Promise.resolve(this.delivered.slice());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('delivered', check);
        reject(new Error(`emulator: ${this.delivered.length} of ${count} messages delivered after ${timeoutMs} ms`));
      }, timeoutMs);
      const check = () => {
        if (this.delivered.length >= count) {
          clearTimeout(timer);
          this.off('delivered', check);
          resolve(this.delivered.slice());
        }
      };
      this.on('delivered', check);
    });
  }

  noteRetryAfter(mailbox: string, retryAfterSeconds: number): void {
    const now = Date.now();
    const until = now + retryAfterSeconds * 1000;
    this.notBefore.set(mailbox, Math.max(this.notBefore.get(mailbox) ?? 0, until));
    this.throttledAt.set(mailbox, now);
  }

  /** Records a request that arrived before the mailbox's Retry-After had passed. */
  checkRetryAfter(mailbox: string, startedAt: number = Date.now(), route = 'unknown'): void {
    const until = this.notBefore.get(mailbox);
    const now = startedAt;
    const sentAt = this.throttledAt.get(mailbox) ?? 0;
    if (until === undefined || now >= until) return;
    if (now > sentAt + this.retryAfterGraceMs) this.retryAfterViolations.push({ mailbox, earlyByMs: until - now, route });
    else this.graceUsedMs = Math.max(this.graceUsedMs, now - sentAt);
  }

  newRequestId(): string {
    return randomUUID();
  }
}
