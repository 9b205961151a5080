/**
 * The only edits the relay makes to a message, all in the top-level header block (never inside
 * MIME parts, DESIGN.md): a Received trace field on top; Date and Message-ID when missing
 * (RFC 5322 §3.6 requires Date; Exchange threads by Message-ID); and one Bcc field carrying the
 * envelope recipients that no To/Cc field names, so Graph - which takes recipients from the
 * headers of MIME content - sends to exactly the SMTP envelope.
 */
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import { addressesIn, type HeaderField } from './header-block.js';
import { canonicalAddress, mailboxKey } from './mailbox.js';
import { formatRfc5322Date } from './rfc5322-date.js';

export interface TraceInfo {
  queueId: string;
  hostname: string;
  heloName: string;
  clientAddress: string;
  /** ESMTP, ESMTPS (TLS) or ESMTPSA (TLS + AUTH), RFC 3848. */
  protocol: string;
  receivedAt: number;
}

export interface HeaderRewrite {
  header: Buffer;
  messageId: string;
  /** Envelope recipients added as Bcc (they appear in no To/Cc field). */
  bcc: string[];
  /** Addresses in To/Cc that are not envelope recipients (see README: "Recipients"). */
  headerOnly: string[];
}

/** Keeps client-supplied text (HELO) from breaking out of the trace field. */
function sanitizeToken(value: string): string {
  const cleaned = value.replace(/[^\x21-\x7e]/g, '?').slice(0, 255);
  return cleaned.length > 0 ? cleaned : 'unknown';
}

export function receivedField(trace: TraceInfo, singleRecipient: string | null): string {
  const forClause = singleRecipient ? `\r\n\tfor <${sanitizeToken(singleRecipient)}>` : '';
  return (
    `Received: from ${sanitizeToken(trace.heloName)} ([${sanitizeToken(trace.clientAddress)}])\r\n` +
    `\tby ${sanitizeToken(trace.hostname)} (smtp-graph-relay) with ${trace.protocol} id ${trace.queueId}${forClause};\r\n` +
    `\t${formatRfc5322Date(trace.receivedAt)}\r\n`
  );
}

/**
 * "Bcc: a,\r\n b" folded one address per line, so no line nears RFC 5322's 998-octet limit. Each
 * address in its header form (local part quoted where needed), so a parser reads exactly one
 * mailbox per envelope recipient.
 */
export function bccField(addresses: readonly string[]): string {
  return `Bcc: ${addresses.map(canonicalAddress).join(',\r\n ')}\r\n`;
}

/**
 * fromPolicy "rewrite": From becomes the sending mailbox, the sender's display name is kept (an "@"
 * in it becomes " at ": Exchange reads an address-like display name as the sender and answers
 * ErrorSendAsDenied, field-lessons.md), and the original address moves to Reply-To.
 */
export function rewrittenFrom(original: string, mailbox: string): { from: string; replyTo: string | null } {
  const parsed = addressparser(original, { flatten: true })[0];
  const address = parsed?.address ?? '';
  const written = displayNameOf(original);
  const name = (written ? libmime.decodeWords(written) : address).replace(/@/g, ' at ').replace(/[\r\n"\\]/g, ' ').trim();
  // eslint-disable-next-line no-control-regex
  const display = /^[\x20-\x7e]*$/.test(name) ? `"${name}"` : libmime.encodeWord(name, 'Q', 60);
  return { from: `From: ${name ? `${display} ` : ''}<${mailbox}>\r\n`, replyTo: address ? `Reply-To: <${address}>\r\n` : null };
}

function formatAddress(name: string, address: string): string {
  if (!name) return `<${address}>`;
  if (/=\?[^?]+\?[bqBQ]\?/.test(name) || /^[\w !#$%&'*+\-/=?^`{|}~.]+$/.test(name)) return `${name} <${address}>`;
  return `"${name.replace(/["\\]/g, '\\$&')}" <${address}>`;
}

/**
 * To/Cc limited to envelope recipients: Graph sends to every address of those fields, so one that
 * is not an envelope recipient (a message fanned out per recipient upstream, a device that lists
 * everybody) would receive it again. The original field is kept as X-Original-To / X-Original-Cc.
 */
function envelopeOnlyField(field: HeaderField, envelope: ReadonlySet<string>): Buffer[] {
  const kept = addressparser(field.value, { flatten: true }).filter((a) => a.address && envelope.has(mailboxKey(a.address)));
  const label = field.name === 'to' ? 'To' : 'Cc';
  const original = Buffer.concat([Buffer.from(`X-Original-${label}:`), field.raw.subarray(field.raw.indexOf(':') + 1)]);
  if (kept.length === 0) return [original];
  return [Buffer.from(`${label}: ${kept.map((a) => formatAddress(a.name, canonicalAddress(a.address))).join(',\r\n ')}\r\n`), original];
}

/**
 * The display name as written. addressparser drops a name equal to the address
 * (`"sw@contoso.example" <sw@contoso.example>`, as sendemail writes it), so the phrase before
 * "<" is read here too.
 */
function displayNameOf(fromValue: string): string {
  const parsed = addressparser(fromValue, { flatten: true })[0]?.name ?? '';
  if (parsed) return parsed;
  const phrase = /^\s*(?:"((?:[^"\\]|\\.)*)"|([^"<]*?))\s*<[^>]*>\s*$/.exec(fromValue.replace(/\r?\n[ \t]/g, ' '));
  return (phrase?.[1] ?? phrase?.[2] ?? '').replace(/\\(.)/g, '$1').trim();
}

/** `"printer@contoso.com" <relay@...>`: a display name that contains an address (its own included). */
export function displayNameLooksLikeAddress(fromValue: string): boolean {
  return /[^\s@]+@[^\s@]+/.test(libmime.decodeWords(displayNameOf(fromValue)));
}

export function rewriteHeader(
  fields: readonly HeaderField[],
  envelopeRcpts: readonly string[],
  trace: TraceInfo,
  fromRewrite?: { mailbox: string },
  headerOnlyPolicy: 'skip' | 'deliver' = 'skip',
): HeaderRewrite {
  const visible = new Set<string>();
  const recipientsOf = new Map<HeaderField, string[]>();
  let hasDate = false;
  let messageId: string | null = null;
  for (const field of fields) {
    if (field.name === 'to' || field.name === 'cc') {
      const addresses = addressesIn(field.value).map(mailboxKey);
      recipientsOf.set(field, addresses);
      for (const address of addresses) visible.add(address);
    } else if (field.name === 'date') hasDate = true;
    else if (field.name === 'message-id' && field.value) messageId = field.value;
  }

  // Compared by mailboxKey: "a,b"@x in the envelope is a,b@x to a header parser, and the same mailbox.
  const envelopeSet = new Set(envelopeRcpts.map(mailboxKey));
  const bccKeys = new Set<string>();
  const bcc = envelopeRcpts.filter((r) => {
    const key = mailboxKey(r);
    if (visible.has(key) || bccKeys.has(key)) return false;
    bccKeys.add(key);
    return true;
  });
  const headerOnly = [...visible].filter((address) => !envelopeSet.has(address));

  // "for" names the recipient to everyone who reads the trace field: only when there is exactly one
  // and a To/Cc field shows it anyway (a Bcc recipient named there would be revealed to the others,
  // e.g. header-only recipients delivered with headerOnlyRecipients: deliver).
  const only = envelopeRcpts.length === 1 ? (envelopeRcpts[0] as string) : null;
  const parts: Buffer[] = [Buffer.from(receivedField(trace, only !== null && visible.has(mailboxKey(only)) ? canonicalAddress(only) : null))];
  const hasReplyTo = fields.some((f) => f.name === 'reply-to');
  const limitToEnvelope = headerOnly.length > 0 && headerOnlyPolicy === 'skip';
  for (const field of fields) {
    // An existing Bcc field is replaced, not duplicated: RFC 5322 allows one, and it must list exactly the
    // envelope recipients that are not visible (a Bcc header naming a non-recipient would make Graph send to it).
    if (field.name === 'bcc') continue;
    if (limitToEnvelope && (recipientsOf.get(field) ?? []).some((a) => !envelopeSet.has(a))) {
      parts.push(...envelopeOnlyField(field, envelopeSet));
      continue;
    }
    if (field.name === 'from' && fromRewrite) {
      const { from, replyTo } = rewrittenFrom(field.value, fromRewrite.mailbox);
      parts.push(Buffer.from(from));
      if (replyTo && !hasReplyTo) parts.push(Buffer.from(replyTo));
      continue;
    }
    if (field.name === 'from' && displayNameLooksLikeAddress(field.value)) {
      // Kept From, but an address-like display name would make Exchange answer ErrorSendAsDenied.
      const own = addressesIn(field.value)[0];
      if (own) {
        parts.push(Buffer.from(rewrittenFrom(field.value, own).from));
        continue;
      }
    }
    parts.push(field.raw);
  }
  if (fromRewrite && !fields.some((f) => f.name === 'from')) parts.push(Buffer.from(`From: <${fromRewrite.mailbox}>\r\n`));
  if (!hasDate) parts.push(Buffer.from(`Date: ${formatRfc5322Date(trace.receivedAt)}\r\n`));
  if (messageId === null) {
    messageId = `<${trace.queueId}@${sanitizeToken(trace.hostname)}>`;
    parts.push(Buffer.from(`Message-ID: ${messageId}\r\n`));
  }
  if (bcc.length > 0) parts.push(Buffer.from(bccField(bcc)));
  return { header: Buffer.concat(parts), messageId, bcc, headerOnly };
}
