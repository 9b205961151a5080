/**
 * smtp-server wiring: ESMTP with PIPELINING, 8BITMIME, SMTPUTF8 and SIZE; policy at RCPT; DATA
 * streamed to the spool by intake.ts. Callbacks are adapted here once: each is called exactly once,
 * and the DATA stream is always drained.
 */
import net from 'node:net';
import os from 'node:os';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import type { Logger } from '../log.js';
import { newQueueId } from '../spool/queue-id.js';
import type { SpoolEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { parseHostPort } from '../config/units.js';
import { receiveMessage } from './intake.js';
import { chooseMailbox, isTrustedClient } from './policy.js';
import { replies, SmtpReply } from './replies.js';
import { applySmtpServerAdjustments } from './smtp-server-adapter.js';

export interface SmtpSettings {
  listen: readonly string[];
  hostname?: string;
  maxMessageSize: number;
  maxRecipients: number;
  maxConnections: number;
  socketTimeoutMs: number;
  defaultMailbox?: string;
}

export interface SmtpDeps {
  spool: Spool;
  logger: Logger;
  clock: Clock;
  /** Called once a message is durable (after the 250 decision, before the reply is written). */
  onQueued: (entry: SpoolEntry) => void;
  /** Called for every refusal, with its SMTP reply code (metrics). */
  onRefused?: (code: number) => void;
}

export interface RunningSmtp {
  addresses: Array<{ host: string; port: number }>;
  /** Applies new limits and the default mailbox to new sessions and transactions (listen addresses need a restart). */
  update(settings: Omit<SmtpSettings, 'listen'>): void;
  /** Stops accepting; sessions in progress get 421 at their next command. */
  close(): Promise<void>;
}

function mailFromAddress(session: SMTPServerSession): string {
  const from = session.envelope.mailFrom;
  return from ? from.address : '';
}

export async function startSmtp(initial: SmtpSettings, deps: SmtpDeps): Promise<RunningSmtp> {
  applySmtpServerAdjustments();
  let settings = initial;
  let hostname = settings.hostname ?? os.hostname();
  const { logger } = deps;
  let closing = false;

  const server = new SMTPServer({
    name: hostname,
    banner: 'smtp-graph-relay',
    size: settings.maxMessageSize,
    rejectOversized: true,
    hideENHANCEDSTATUSCODES: false,
    hideSTARTTLS: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    authOptional: true,
    disableReverseLookup: true,
    maxClients: settings.maxConnections,
    socketTimeout: settings.socketTimeoutMs,
    logger: false,
    // Consulted by smtp-server-adapter.ts before the greeting.
    ...({ skipGreetingDelay: isTrustedClient } as object),
    onConnect(session, callback) {
      if (closing) return callback(replies.shuttingDown());
      callback();
    },
    onMailFrom(_address, _session, callback) {
      if (closing) return callback(replies.shuttingDown());
      callback();
    },
    onRcptTo(address, session, callback) {
      if (session.envelope.rcptTo.length >= settings.maxRecipients) {
        logger.info({ event: 'smtp.refused', client: session.remoteAddress, reason: 'too many recipients' }, 'recipient refused');
        deps.onRefused?.(452);
        return callback(replies.tooManyRecipients(settings.maxRecipients));
      }
      if (!address.address.includes('@')) return callback(replies.badRecipient(address.address));
      if (chooseMailbox(settings.defaultMailbox) === null) {
        logger.warn({ event: 'smtp.refused', client: session.remoteAddress, reason: 'no sending mailbox' }, 'recipient refused');
        deps.onRefused?.(550);
        return callback(replies.noSendingMailbox());
      }
      callback();
    },
    onData(stream, session, callback) {
      const now = deps.clock.now();
      const queueId = newQueueId(now);
      const rcptTo = session.envelope.rcptTo.map((r) => r.address);
      const mailbox = chooseMailbox(settings.defaultMailbox) as string;
      receiveMessage(
        stream,
        {
          queueId,
          mailFrom: mailFromAddress(session),
          rcptTo,
          mailbox,
          maxMessageSize: settings.maxMessageSize,
          trace: {
            queueId,
            hostname,
            heloName: session.hostNameAppearsAs || 'unknown',
            clientAddress: session.remoteAddress,
            protocol: session.transmissionType || 'ESMTP',
            receivedAt: now,
          },
        },
        deps.spool,
      ).then(
        (result) => {
          logger.info(
            {
              event: 'smtp.accepted',
              queueId,
              client: session.remoteAddress,
              helo: session.hostNameAppearsAs,
              from: result.entry.envelope.mailFrom,
              recipients: rcptTo.length,
              bcc: result.bcc.length,
              size: result.entry.size,
              messageId: result.entry.messageId,
              mailbox,
            },
            'message queued',
          );
          if (result.headerOnlyRecipients.length > 0) {
            logger.warn({ event: 'smtp.header_only_recipients', queueId, count: result.headerOnlyRecipients.length }, 'To/Cc name addresses that are not envelope recipients; Graph will also send to them');
          }
          deps.onQueued(result.entry);
          callback(null, `Ok: queued as ${queueId}`);
        },
        (err: unknown) => {
          const reply = err instanceof SmtpReply ? err : replies.spoolFailure();
          logger.warn({ event: 'smtp.refused', queueId, client: session.remoteAddress, code: reply.responseCode, reason: reply.message }, 'message refused');
          deps.onRefused?.(reply.responseCode);
          callback(reply);
        },
      );
    },
  });

  server.on('error', (err) => logger.error({ event: 'smtp.error', err: err.message }, 'SMTP server error'));

  const addresses: Array<{ host: string; port: number }> = [];
  const listeners: net.Server[] = [];
  for (const spec of settings.listen) {
    const { host, port } = parseHostPort(spec) as { host: string; port: number };
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.server.once('error', onError);
      // One SMTPServer, several listening sockets: each accepted socket is handed to smtp-server.
      if (listeners.length === 0) {
        server.listen(port, host, () => {
          server.server.off('error', onError);
          resolve();
        });
        listeners.push(server.server);
      } else {
        const extra = net.createServer((socket) => server.connect(socket));
        extra.once('error', reject);
        extra.listen(port, host, () => resolve());
        listeners.push(extra);
      }
    });
    const bound = listeners[listeners.length - 1]?.address();
    addresses.push({ host, port: typeof bound === 'object' && bound ? bound.port : port });
  }

  return {
    addresses,
    update(next) {
      settings = { ...next, listen: settings.listen };
      hostname = settings.hostname ?? os.hostname();
      // smtp-server reads these per connection / per command.
      Object.assign(server.options, { name: hostname, size: settings.maxMessageSize, maxClients: settings.maxConnections, socketTimeout: settings.socketTimeoutMs });
    },
    close: async () => {
      closing = true;
      await Promise.all(
        listeners.slice(1).map((l) => new Promise<void>((resolve) => l.close(() => resolve()))),
      );
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

