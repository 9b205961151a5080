/**
 * Delivery status notifications (RFC 3464 multipart/report) for mail that finally failed, so it does
 * not vanish into a log (Postfix sends one; the peers send nothing). Never for the null sender or
 * for a message that is itself a report, so bounces cannot loop (RFC 3461 §6.2).
 */
import { canonicalAddress, mailboxSyntaxError } from '../mime/mailbox.js';
import { formatRfc5322Date } from '../mime/rfc5322-date.js';
import type { SpoolEntry } from '../spool/entry.js';

export interface DsnInput {
  failed: SpoolEntry;
  reason: string;
  expired: boolean;
  /** The top-level header block of the failed message (text/rfc822-headers part). */
  originalHeader: Buffer;
  reportingHost: string;
  /** The mailbox the DSN is sent from (it must be allowed to send as its From). */
  fromMailbox: string;
  to: string;
  now: number;
  boundary: string;
  messageId: string;
}

/** True when the header block is a delivery report already (its own bounce must not bounce). */
export function isDeliveryReport(header: Buffer): boolean {
  return /^content-type:\s*multipart\/report\s*;[^\r\n]*(\r\n[ \t][^\r\n]*)*report-type\s*=\s*"?delivery-status/im.test(header.toString('latin1'));
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]+/g;
/** One line of generated text: control characters (CR, LF, NUL...) become a space, so nothing can start a field or a part. */
const oneLine = (text: string) => text.replace(CONTROL, ' ');
const fold = (text: string) => oneLine(text).replace(/(.{1,900})(\s|$)/g, '$1\r\n ').trimEnd();
// eslint-disable-next-line no-control-regex
const isAscii = (text: string) => /^[\x00-\x7f]*$/.test(text);

/**
 * RFC 3464 §2.1.2 address-type "rfc822" for ASCII addresses; "utf-8" (RFC 6533 §3) for SMTPUTF8
 * ones, which also makes the report a message/global-delivery-status.
 */
const typedAddress = (address: string) => `${isAscii(address) ? 'rfc822' : 'utf-8'}; ${oneLine(address)}`;

/** The address a generated header field names: a valid mailbox, quoted where needed, or an error (never a field split by CR LF). */
function fieldAddress(address: string, what: string): string {
  const problem = mailboxSyntaxError(address);
  if (problem) throw new Error(`the bounce ${what} <${oneLine(address).slice(0, 100)}> is not a valid mailbox (${problem}); no bounce is sent`);
  return canonicalAddress(address);
}

/**
 * The report as bytes: the generated parts in UTF-8 (a UTF-8 sender, SMTPUTF8, stays intact; they
 * were encoded as latin1, which mangled it), the original header block as it came, byte for byte.
 */
export function buildDsn(input: DsnInput): Buffer {
  const { failed, reason, expired } = input;
  const to = fieldAddress(input.to, 'recipient');
  const from = fieldAddress(input.fromMailbox, 'sender');
  // RFC 3463: 4.4.7 "delivery time expired"; 5.0.0 for other permanent failures.
  const status = expired ? '4.4.7' : '5.0.0';
  const recipients = failed.envelope.rcptTo;
  const global = !recipients.every(isAscii);
  const human = [
    `This is the mail relay at ${oneLine(input.reportingHost)}.`,
    '',
    expired
      ? 'Your message could not be delivered within the queue lifetime and has been given up.'
      : 'Your message could not be delivered; Microsoft Graph refused it permanently.',
    '',
    `Queue id: ${failed.id}`,
    `Recipients: ${oneLine(recipients.join(', '))}`,
    `Reason: ${oneLine(reason)}`,
  ].join('\r\n');
  const perRecipient = recipients
    .map((r) => [`Final-Recipient: ${typedAddress(r)}`, 'Action: failed', `Status: ${status}`, `Diagnostic-Code: smtp; ${fold(reason)}`].join('\r\n'))
    .join('\r\n\r\n');
  const b = input.boundary;
  const head = [
    `From: "Mail Delivery System" <${from}>`,
    `To: <${to}>`,
    `Subject: Undelivered Mail Returned to Sender`,
    `Date: ${formatRfc5322Date(input.now)}`,
    `Message-ID: ${input.messageId}`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${b}"`,
    '',
    `--${b}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    human,
    '',
    `--${b}`,
    `Content-Type: message/${global ? 'global-delivery-status' : 'delivery-status'}`,
    '',
    `Reporting-MTA: dns; ${oneLine(input.reportingHost)}`,
    `X-Queue-ID: ${failed.id}`,
    `Arrival-Date: ${formatRfc5322Date(failed.receivedAt)}`,
    '',
    perRecipient,
    '',
    `--${b}`,
    'Content-Type: text/rfc822-headers',
    '',
    '',
  ];
  const original = input.originalHeader.subarray(-2).equals(Buffer.from('\r\n')) ? input.originalHeader.subarray(0, -2) : input.originalHeader;
  return Buffer.concat([Buffer.from(head.join('\r\n'), 'utf8'), original, Buffer.from(['', '', `--${b}--`, ''].join('\r\n'), 'utf8')]);
}
