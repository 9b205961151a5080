/**
 * SMTP replies the relay gives on purpose, each with its RFC 3463 enhanced status code.
 * smtp-server sends err.responseCode + err.message; the code in the message is kept as written
 * (see smtp-server-adapter.ts).
 */
export class SmtpReply extends Error {
  constructor(
    readonly responseCode: number,
    readonly enhancedCode: string,
    text: string,
  ) {
    super(`${enhancedCode} ${text}`);
    this.name = 'SmtpReply';
  }
}

export const replies = {
  /** The durable write failed: the client keeps the message and retries (RFC 5321 §4.2.5). */
  spoolFailure: () => new SmtpReply(451, '4.3.0', 'Temporary local problem storing the message, please try again later'),
  tooBig: (limit: number) => new SmtpReply(552, '5.3.4', `Message exceeds fixed maximum message size of ${limit} bytes`),
  headerTooBig: (limit: number) => new SmtpReply(552, '5.3.4', `Message header block exceeds ${limit} bytes`),
  tooManyRecipients: (limit: number) => new SmtpReply(452, '4.5.3', `Too many recipients (at most ${limit} per message)`),
  noSendingMailbox: () => new SmtpReply(550, '5.7.1', 'Relay has no sending mailbox configured for this sender'),
  shuttingDown: () => new SmtpReply(421, '4.3.2', 'Service shutting down, please try again later'),
  // RFC 3463: X.1.3 bad destination mailbox syntax, X.1.7 bad sender's mailbox syntax.
  badRecipient: (address: string) => new SmtpReply(501, '5.1.3', `Bad recipient address syntax: ${address.slice(0, 100)}`),
  badSender: (address: string) => new SmtpReply(501, '5.1.7', `Bad sender address syntax: ${address.slice(0, 100)}`),
  clientNotAllowed: () => new SmtpReply(554, '5.7.1', 'Your address is not allowed to use this relay'),
  authRequired: () => new SmtpReply(530, '5.7.0', 'Authentication required'),
  badCredentials: () => new SmtpReply(535, '5.7.8', 'Authentication credentials invalid'),
  // Temporary on purpose: a correct password must never be answered with a permanent failure.
  tooManyFailedLogins: () => new SmtpReply(454, '4.7.0', 'Too many failed logins from your address, try again later'),
  fromNotAllowed: (field: 'From' | 'Sender', address: string, mailbox: string) =>
    new SmtpReply(550, '5.7.1', `${field} <${address.slice(0, 100)}> may not be sent through this relay: the ${field} address must be <${mailbox}>`),
  headerSenderNotAllowed: (field: 'From' | 'Sender', address: string) => new SmtpReply(550, '5.7.1', `${field} <${address.slice(0, 100)}> is not allowed for this user (smtp.auth.users[].allowedSenders)`),
  clientRateLimited: () => new SmtpReply(450, '4.7.0', 'Too many messages from your address, try again later'),
  authMechanism: () => new SmtpReply(504, '5.5.4', 'Unrecognized authentication type'),
  senderNotAllowed: (address: string) => new SmtpReply(550, '5.7.1', `Sender <${address.slice(0, 100)}> is not allowed for this user`),
} as const;
