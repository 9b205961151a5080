/**
 * smtp-server wiring: ESMTP with PIPELINING, 8BITMIME, SMTPUTF8 and SIZE, STARTTLS and implicit
 * TLS, AUTH PLAIN/LOGIN against local users; policy at connect (allowlist), MAIL (auth, allowed
 * senders) and RCPT (limits); DATA streamed to the spool by intake.ts. One SMTPServer per listen
 * address, so "is this listener loopback" (cleartext AUTH) is a per-listener fact. Callbacks are
 * adapted here once: each is called exactly once and the DATA stream is always drained.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { parseHostPort } from '../config/units.js';
import type { SmtpAuthUser } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { SpoolEntry } from '../spool/entry.js';
import { newQueueId } from '../spool/queue-id.js';
import type { Spool } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { ClientAllowlist, isLoopback, isLoopbackHost, senderMatches } from '../net/address-policy.js';
import { mailboxSyntaxError } from '../mime/mailbox.js';
import { receiveMessage } from './intake.js';
import { LoginAttemptGate, SlidingWindowLimiter, verifyPassword } from './local-auth.js';
import { isBarePostmaster, Router } from './routing.js';
import type { RouteConfig } from '../config/schema.js';
import { replies, SmtpReply } from './replies.js';
import { applySmtpServerAdjustments, type RefusalListener } from './smtp-server-adapter.js';

export interface SmtpTlsSettings {
  certFile: string;
  keyFile: string;
  implicitListen: readonly string[];
  minVersion: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
}

export interface SmtpAuthSettings {
  required: boolean;
  allowInsecure: boolean;
  users: readonly SmtpAuthUser[];
  maxFailures: number;
  failureWindowMs: number;
}

export interface SmtpSettings {
  listen: readonly string[];
  hostname?: string;
  maxMessageSize: number;
  maxRecipients: number;
  maxConnections: number;
  socketTimeoutMs: number;
  defaultMailbox?: string;
  routes?: readonly RouteConfig[];
  headerOnlyRecipients?: 'skip' | 'deliver';
  allowedClients?: readonly string[];
  /** Messages (MAIL FROM) per client address per minute; 0/undefined: unlimited. */
  messagesPerMinutePerClient?: number;
  /** Whole-session limit against slow-drip clients (slowloris), whatever their activity. */
  maxSessionMs?: number;
  tls?: SmtpTlsSettings;
  auth?: SmtpAuthSettings;
}

export interface SmtpDeps {
  spool: Spool;
  logger: Logger;
  clock: Clock;
  /** Called once a message is durable (after the 250 decision, before the reply is written). */
  onQueued: (entry: SpoolEntry) => void;
  /** Called for every refusal, with its SMTP reply code (metrics). */
  onRefused?: (code: number) => void;
  /** Messages queued per mailbox, to pick the least loaded mailbox of a route's pool. */
  mailboxLoad?: (mailbox: string) => number;
}

export interface RunningSmtp {
  addresses: Array<{ host: string; port: number; implicitTls: boolean }>;
  /** Applies new limits, policy and the default mailbox to new sessions (listen addresses need a restart). */
  update(settings: Omit<SmtpSettings, 'listen'>): void;
  /** Re-reads the TLS certificate and key; sessions in progress keep theirs. */
  reloadCertificates(): Promise<boolean>;
  /** Stops accepting; sessions in progress get 421 at their next command. */
  close(): Promise<void>;
}

interface AuthenticatedUser {
  username: string;
  allowedSenders?: readonly string[];
}

function mailFromAddress(session: SMTPServerSession): string {
  const from = session.envelope.mailFrom;
  return from ? from.address : '';
}

async function readTls(tls: SmtpTlsSettings): Promise<{ key: Buffer; cert: Buffer }> {
  const [key, cert] = await Promise.all([readFile(tls.keyFile), readFile(tls.certFile)]);
  return { key, cert };
}

export async function startSmtp(initial: SmtpSettings, deps: SmtpDeps): Promise<RunningSmtp> {
  applySmtpServerAdjustments();
  let settings = initial;
  let hostname = settings.hostname ?? os.hostname();
  let allowlist = settings.allowedClients ? new ClientAllowlist(settings.allowedClients) : null;
  const makeRouter = () => new Router(settings.routes ?? [], settings.defaultMailbox, deps.mailboxLoad);
  let router = makeRouter();
  const limiters = () => ({
    logins: new LoginAttemptGate(new SlidingWindowLimiter(settings.auth?.maxFailures ?? 5, settings.auth?.failureWindowMs ?? 900_000, deps.clock.now), settings.auth?.maxFailures ?? 5),
    messages: settings.messagesPerMinutePerClient ? new SlidingWindowLimiter(settings.messagesPerMinutePerClient, 60_000, deps.clock.now) : null,
  });
  let limiter = limiters();
  const { logger } = deps;
  let closing = false;
  let tlsMaterial = settings.tls ? await readTls(settings.tls) : null;

  // Why a hook refused, kept until the reply goes out: the log line is written when the reply is
  // sent (onRefusalSent), so refusals smtp-server makes by itself (530 before AUTH, 552 for SIZE=)
  // are logged too, and a refusal smtp-server restates (552 after an oversized DATA) only once.
  const reasons = new WeakMap<object, { reason: string; queueId?: string }>();
  const refuse = (session: SMTPServerSession, reply: SmtpReply, reason: string, queueId?: string) => {
    reasons.set(session, { reason, ...(queueId ? { queueId } : {}) });
    return reply;
  };
  const onRefusalSent: RefusalListener = (session, client, code, text) => {
    const hook = reasons.get(session);
    reasons.delete(session);
    const reply = text.slice(0, 200);
    logger.warn({ event: 'smtp.refused', ...(hook?.queueId ? { queueId: hook.queueId } : {}), client, code, reason: hook?.reason ?? reply, reply }, 'refused');
    deps.onRefused?.(code);
  };
  // Allowlisted (or loopback) clients skip smtp-server's 100 ms early-talker delay.
  const isTrusted = (address: string) => isLoopback(address) || (allowlist?.allows(address) ?? false);

  const hooks: Partial<SMTPServerOptions> = {
    onConnect(session, callback) {
      if (closing) return callback(replies.shuttingDown());
      // The allowlist is checked at connect, before any command (not after DATA).
      if (allowlist && !allowlist.allows(session.remoteAddress)) return callback(refuse(session, replies.clientNotAllowed(), 'client address not in smtp.allowedClients'));
      callback();
    },
    onAuth(auth, session, callback) {
      const address = session.remoteAddress;
      if (auth.method !== 'PLAIN' && auth.method !== 'LOGIN') return callback(refuse(session, replies.authMechanism(), `unsupported AUTH ${auth.method}`));
      // The guess holds a place under the failure limit from before scrypt runs until it has
      // answered (LoginAttemptGate), so at most maxFailures guesses per window and client address
      // are ever evaluated, however many connections send them at once.
      const user = settings.auth?.users.find((u) => u.username === auth.username);
      // Verify against a dummy hash for unknown users too, so timing does not reveal which names exist.
      const hash = user?.passwordHash ?? '$scrypt$N=16384,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
      const verify = async () => {
        const done = await limiter.logins.begin(address);
        if (!done) return callback(refuse(session, replies.tooManyFailedLogins(), 'too many failed logins'));
        const ok = await verifyPassword(auth.password ?? '', hash).catch(() => null);
        done(!(ok && user));
        if (ok && user) {
          logger.info({ event: 'smtp.authenticated', client: address, user: user.username }, 'authenticated');
          const authenticated: AuthenticatedUser = { username: user.username, ...(user.allowedSenders ? { allowedSenders: user.allowedSenders } : {}) };
          return callback(null, { user: authenticated });
        }
        callback(refuse(session, replies.badCredentials(), ok === null ? 'password verification error' : `failed login for "${String(auth.username).slice(0, 64)}"`));
      };
      void verify();
    },
    onMailFrom(address, session, callback) {
      if (closing) return callback(replies.shuttingDown());
      const user = session.user as AuthenticatedUser | undefined;
      if (settings.auth?.required && !user) return callback(refuse(session, replies.authRequired(), 'MAIL without AUTH'));
      // The null sender <> is allowed (bounces); anything else must be a mailbox: it may end up in a DSN's To.
      const senderError = address.address === '' ? null : mailboxSyntaxError(address.address);
      if (senderError) return callback(refuse(session, replies.badSender(address.address), `bad sender address: ${senderError}`));
      if (user?.allowedSenders && !user.allowedSenders.some((p) => senderMatches(p, address.address))) {
        return callback(refuse(session, replies.senderNotAllowed(address.address), `user ${user.username} may not send as <${address.address}>`));
      }
      if (limiter.messages) {
        if (limiter.messages.isBlocked(session.remoteAddress)) return callback(refuse(session, replies.clientRateLimited(), 'per-client message rate exceeded'));
        limiter.messages.record(session.remoteAddress);
      }
      callback();
    },
    onRcptTo(address, session, callback) {
      if (session.envelope.rcptTo.length >= settings.maxRecipients) return callback(refuse(session, replies.tooManyRecipients(settings.maxRecipients), 'too many recipients'));
      // Envelope recipients become Bcc/To fields Graph reads: only a real mailbox may pass (mailbox.ts).
      const recipientError = isBarePostmaster(address.address) ? null : mailboxSyntaxError(address.address);
      if (recipientError) return callback(refuse(session, replies.badRecipient(address.address), `bad recipient address: ${recipientError}`));
      const user = session.user as AuthenticatedUser | undefined;
      if (!router.possible({ envelopeFrom: mailFromAddress(session), clientAddress: session.remoteAddress, authUser: user?.username })) {
        return callback(refuse(session, replies.noSendingMailbox(), 'no route and no graph.mailbox for this sender'));
      }
      callback();
    },
    onData(stream, session, callback) {
      const now = deps.clock.now();
      const queueId = newQueueId(now);
      const rcptTo = session.envelope.rcptTo.map((r) => r.address);
      const user = session.user as AuthenticatedUser | undefined;
      const facts = { envelopeFrom: mailFromAddress(session), clientAddress: session.remoteAddress, authUser: user?.username };
      receiveMessage(
        stream,
        {
          queueId,
          mailFrom: mailFromAddress(session),
          rcptTo,
          route: (headerFrom) => router.choose({ ...facts, headerFrom }),
          maxMessageSize: settings.maxMessageSize,
          ...(settings.headerOnlyRecipients ? { headerOnlyRecipients: settings.headerOnlyRecipients } : {}),
          ...(user ? { authUser: user.username } : {}),
          ...(user?.allowedSenders ? { allowedSenders: user.allowedSenders } : {}),
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
              user: user?.username,
              tls: session.secure,
              from: result.entry.envelope.mailFrom,
              recipients: rcptTo.length,
              bcc: result.bcc.length,
              size: result.entry.size,
              messageId: result.entry.messageId,
              mailbox: result.route.mailbox,
              route: result.route.routeIndex,
              fromPolicy: result.route.fromPolicy,
            },
            'message queued',
          );
          if (result.headerOnlyRecipients.length > 0) {
            const deliver = settings.headerOnlyRecipients === 'deliver';
            logger.info(
              { event: 'smtp.header_only_recipients', queueId, count: result.headerOnlyRecipients.length, policy: deliver ? 'deliver' : 'skip' },
              deliver ? 'To/Cc name addresses outside the envelope; Graph will also send to them' : 'To/Cc limited to the envelope recipients (originals kept as X-Original-To/Cc)',
            );
          }
          deps.onQueued(result.entry);
          callback(null, `Ok: queued as ${queueId}`);
        },
        (err: unknown) => {
          const reply = err instanceof SmtpReply ? err : replies.spoolFailure();
          callback(refuse(session, reply, reply.message, queueId));
        },
      );
    },
  };

  const servers: SMTPServer[] = [];
  const addresses: RunningSmtp['addresses'] = [];
  const specs = [...settings.listen.map((l) => ({ listen: l, implicitTls: false })), ...(settings.tls?.implicitListen ?? []).map((l) => ({ listen: l, implicitTls: true }))];
  for (const spec of specs) {
    const { host, port } = parseHostPort(spec.listen) as { host: string; port: number };
    const authUsers = (settings.auth?.users.length ?? 0) > 0;
    const server = new SMTPServer({
      ...hooks,
      name: hostname,
      banner: 'smtp-graph-relay',
      size: settings.maxMessageSize,
      rejectOversized: true,
      hideENHANCEDSTATUSCODES: false,
      secure: spec.implicitTls,
      ...(tlsMaterial ? { key: tlsMaterial.key, cert: tlsMaterial.cert, minVersion: settings.tls?.minVersion } : {}),
      hideSTARTTLS: !tlsMaterial || spec.implicitTls,
      disabledCommands: [...(authUsers ? [] : ['AUTH']), ...(tlsMaterial && !spec.implicitTls ? [] : ['STARTTLS'])],
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: !settings.auth?.required,
      // AUTH in cleartext only on a loopback listener, or when explicitly allowed.
      allowInsecureAuth: isLoopbackHost(host) || settings.auth?.allowInsecure === true,
      disableReverseLookup: true,
      maxClients: settings.maxConnections,
      socketTimeout: settings.socketTimeoutMs,
      // RFC 5321 §4.5.3.1.4 allows 512 octets per command line; extensions (AUTH PLAIN with long
      // credentials, SIZE/BODY parameters) need more. 4 KiB bounds memory per session.
      maxCommandLength: 4096,
      logger: false,
      // Consulted by smtp-server-adapter.ts before the greeting and for the session deadline.
      ...({ skipGreetingDelay: isTrusted, maxSessionMs: () => settings.maxSessionMs ?? 0, onRefusalSent } as object),
      // smtp-server answers MAIL without AUTH itself (when AUTH is offered): same words as our own 530.
      authRequiredMessage: replies.authRequired().message,
    } as SMTPServerOptions);
    server.on('error', (err) => logger.error({ event: 'smtp.error', listen: spec.listen, err: err.message }, 'SMTP server error'));
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.listen(port, host, () => {
        server.server.off('error', reject);
        resolve();
      });
    });
    const bound = server.server.address();
    addresses.push({ host, port: typeof bound === 'object' && bound ? bound.port : port, implicitTls: spec.implicitTls });
    servers.push(server);
  }

  const reloadCertificates = async (): Promise<boolean> => {
    if (!settings.tls) return false;
    try {
      tlsMaterial = await readTls(settings.tls);
      for (const server of servers) server.updateSecureContext({ key: tlsMaterial.key, cert: tlsMaterial.cert });
      logger.info({ event: 'smtp.certificate_reloaded', certFile: settings.tls.certFile }, 'TLS certificate reloaded');
      return true;
    } catch (err) {
      logger.error({ event: 'smtp.certificate_reload_failed', err: (err as Error).message }, 'TLS certificate reload failed; the previous certificate stays in use');
      return false;
    }
  };

  // Certificates renewed on disk (certbot, an ACME client) are picked up without a signal.
  const watchers: FSWatcher[] = [];
  let reloadTimer: NodeJS.Timeout | null = null;
  if (settings.tls) {
    for (const file of [settings.tls.certFile, settings.tls.keyFile]) {
      try {
        const watcher = watch(file, { persistent: false }, () => {
          if (reloadTimer) clearTimeout(reloadTimer);
          // Renewals write key and certificate separately: wait for both.
          reloadTimer = setTimeout(() => void reloadCertificates(), 500);
        });
        watcher.on('error', () => undefined);
        watchers.push(watcher);
      } catch {
        // Not watchable (some network file systems): SIGHUP still reloads.
      }
    }
  }

  return {
    addresses,
    update(next) {
      settings = { ...next, listen: settings.listen, ...(settings.tls ? { tls: { ...settings.tls, ...(next.tls ?? {}) } } : {}) };
      hostname = settings.hostname ?? os.hostname();
      allowlist = settings.allowedClients ? new ClientAllowlist(settings.allowedClients) : null;
      router = makeRouter();
      limiter = limiters();
      // smtp-server reads these per connection / per command.
      for (const server of servers) {
        Object.assign(server.options, { name: hostname, size: settings.maxMessageSize, maxClients: settings.maxConnections, socketTimeout: settings.socketTimeoutMs, authOptional: !settings.auth?.required });
      }
    },
    reloadCertificates,
    close: async () => {
      closing = true;
      for (const w of watchers) w.close();
      if (reloadTimer) clearTimeout(reloadTimer);
      await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    },
  };
}
