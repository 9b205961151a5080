/**
 * Delivery status notifications (RFC 3464 multipart/report) for mail that finally failed, so it does
 * not vanish into a log (Postfix sends one; the peers send nothing). Never for the null sender or
 * for a message that is itself a report, so bounces cannot loop (RFC 3461 §6.2).
 */
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

const fold = (text: string) => text.replace(/[\r\n]+/g, ' ').replace(/(.{1,900})(\s|$)/g, '$1\r\n ').trimEnd();

export function buildDsn(input: DsnInput): Buffer {
  const { failed, reason, expired } = input;
  // RFC 3463: 4.4.7 "delivery time expired"; 5.0.0 for other permanent failures.
  const status = expired ? '4.4.7' : '5.0.0';
  const recipients = failed.envelope.rcptTo;
  const human = [
    `This is the mail relay at ${input.reportingHost}.`,
    '',
    expired
      ? 'Your message could not be delivered within the queue lifetime and has been given up.'
      : 'Your message could not be delivered; Microsoft Graph refused it permanently.',
    '',
    `Queue id: ${failed.id}`,
    `Recipients: ${recipients.join(', ')}`,
    `Reason: ${reason}`,
  ].join('\r\n');
  const perRecipient = recipients
    .map((r) => [`Final-Recipient: rfc822; ${r}`, 'Action: failed', `Status: ${status}`, `Diagnostic-Code: smtp; ${fold(reason)}`].join('\r\n'))
    .join('\r\n\r\n');
  const b = input.boundary;
  const parts = [
    `From: "Mail Delivery System" <${input.fromMailbox}>`,
    `To: <${input.to}>`,
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
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${input.reportingHost}`,
    `X-Queue-ID: ${failed.id}`,
    `Arrival-Date: ${formatRfc5322Date(failed.receivedAt)}`,
    '',
    perRecipient,
    '',
    `--${b}`,
    'Content-Type: text/rfc822-headers',
    '',
    input.originalHeader.toString('latin1').replace(/\r\n$/, ''),
    '',
    `--${b}--`,
    '',
  ];
  return Buffer.from(parts.join('\r\n'), 'latin1');
}
