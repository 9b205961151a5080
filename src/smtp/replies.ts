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
  badRecipient: (address: string) => new SmtpReply(501, '5.1.3', `Bad recipient address syntax: ${address.slice(0, 100)}`),
} as const;
