/**
 * `smtp-graph-relay check`: the "Save and test your connection" step done properly. Each stage
 * prints what it did; a failure prints the cause and the fix. Exit 0 only when sending would work.
 */
import type { Writable } from 'node:stream';
import { createGraphClients } from '../app.js';
import type { RelayConfig } from '../config/schema.js';
import { SINGLE_REQUEST_LIMIT } from '../graph/large-message.js';
import { TokenError } from '../graph/token-provider.js';
import { formatRfc5322Date } from '../mime/rfc5322-date.js';
import { diagnoseAadsts, diagnoseGraph, diagnoseNetwork, MISSING_MAIL_SEND, type Diagnosis } from './diagnosis.js';

export interface CheckOptions {
  sendTo?: string | undefined;
  /** The From address to test (a device's), when it differs from graph.mailbox. */
  from?: string | undefined;
  out: Writable;
  extraCaPem?: string[];
}

/** Permissions in a Graph access token (roles for app-only, scp for delegated); null if not a readable JWT. */
export function tokenPermissions(token: string): string[] | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { roles?: unknown; scp?: unknown };
    const roles = Array.isArray(claims.roles) ? claims.roles.filter((r): r is string => typeof r === 'string') : [];
    const scopes = typeof claims.scp === 'string' ? claims.scp.split(' ').filter(Boolean) : [];
    return [...roles, ...scopes];
  } catch {
    return null;
  }
}

/** One line of a check: what a stage found, with the cause and fix when it failed. */
export interface CheckStep {
  status: 'ok' | 'fail' | 'warn' | 'note';
  /** The stage: config, token, permission, mailbox, send. */
  stage: string;
  message: string;
  fix?: string;
}

/**
 * The stages of a check, reported one by one through `report` as they finish (the `check` command
 * prints them; the setup page shows them live). True when sending would work.
 */
export async function runCheckStages(config: RelayConfig, options: Omit<CheckOptions, 'out'>, report: (step: CheckStep) => void): Promise<boolean> {
  const say = (status: CheckStep['status'], stage: string, message: string, fix?: string) => report({ status, stage, message, ...(fix ? { fix } : {}) });
  const fail = (stage: string, what: string, diagnosis: Diagnosis | null, detail: string) => {
    say('fail', stage, `${what}: ${diagnosis ? diagnosis.cause : detail}`, diagnosis?.fix);
    return false;
  };
  const { http, tokens, mailer } = await createGraphClients(config, options.extraCaPem);
  try {
    say('ok', 'config', `configuration is valid (auth: ${tokens.description}; authority ${config.graph.authorityHost}; Graph ${config.graph.endpoint})`);
    let token: string;
    try {
      token = await tokens.getToken();
      say('ok', 'token', 'token acquired');
    } catch (err) {
      const e = TokenError.from(err, false);
      const network = e.errorCode === 'network_error' ? diagnoseNetwork(e.message) : null;
      const detail = e.transient ? `${e.message} (network or service problem: check proxy, firewall and DNS for ${new URL(config.graph.authorityHost).host})` : e.message;
      return fail('token', `token${e.aadsts ? ` (AADSTS${e.aadsts})` : ''}`, network ?? diagnoseAadsts(e.aadsts), detail);
    }
    const permissions = tokenPermissions(token);
    const type = tokens.delegated ? 'Delegated' : 'Application';
    if (permissions && !permissions.includes('Mail.Send')) return fail('permission', 'permission', MISSING_MAIL_SEND, 'no Mail.Send');
    if (permissions) say('ok', 'permission', `token grants Mail.Send${permissions.includes('Mail.ReadWrite') ? ' and Mail.ReadWrite' : ''} (${type.toLowerCase()})`);
    // Drafts and upload sessions (messages over one request) need Mail.ReadWrite of the same type (graph-api-facts §2.3, §9).
    const largeMessages = config.smtp.maxMessageSize > SINGLE_REQUEST_LIMIT;
    if (permissions && largeMessages && !permissions.includes('Mail.ReadWrite')) {
      say(
        'warn',
        'permission',
        `no Mail.ReadWrite: messages over 3 MB (${SINGLE_REQUEST_LIMIT} bytes; scans with attachments) are sent as a draft with upload sessions and will wait in the queue`,
        `add Mail.ReadWrite as a *${type}* permission and grant admin consent${tokens.delegated ? ', then sign in again (`smtp-graph-relay login` for deviceCode)' : ''}, or set smtp.maxMessageSize to 3MB`,
      );
    }
    if (tokens.delegated && largeMessages) {
      say('note', 'permission', "delegated sign-in: attachment upload sessions work only in the signed-in user's own mailbox, so graph.mailbox must be that user");
    }

    const mailbox = config.graph.mailbox;
    if (!mailbox) return fail('mailbox', 'mailbox', { cause: 'graph.mailbox is not set, so the relay has no mailbox to send from', fix: 'set graph.mailbox to the UPN of the sending mailbox' }, '');
    const { outcome: lookup } = await mailer.call('GET', `/users/${encodeURIComponent(mailbox)}`, token);
    if (lookup.kind === 'network') return fail('mailbox', `mailbox ${mailbox}`, diagnoseNetwork(lookup.message), `network error ${lookup.code ?? ''} ${lookup.message}`);
    if (lookup.status === 200) say('ok', 'mailbox', `mailbox ${mailbox} exists`);
    else if (lookup.status === 403) say('note', 'mailbox', 'mailbox lookup not permitted (the app needs User.Read.All only for this check, not for sending)');
    else return fail('mailbox', `mailbox ${mailbox} (HTTP ${lookup.status} ${lookup.code ?? ''})`, diagnoseGraph(lookup.status, lookup.code, lookup.message), lookup.message ?? '');

    if (!options.sendTo) {
      say('note', 'send', 'no test message sent: add --send-to ADDRESS to prove sending end to end');
      return true;
    }
    const from = options.from ?? mailbox;
    const mime = Buffer.from(
      `From: ${from}\r\nTo: ${options.sendTo}\r\nSubject: smtp-graph-relay connection test\r\nDate: ${formatRfc5322Date(Date.now())}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis message was sent by "smtp-graph-relay check". Sending works.\r\n`,
    );
    const outcome = await mailer.sendMime(mailbox, mime, token);
    if (outcome.kind === 'network') return fail('send', 'sendMail', diagnoseNetwork(outcome.message), `network error ${outcome.code ?? ''} ${outcome.message}`);
    if (outcome.status === 202) {
      say('ok', 'send', `test message from ${from} accepted by Graph for ${options.sendTo} (request-id ${outcome.requestId ?? '?'})`);
      return true;
    }
    return fail('send', `sendMail (HTTP ${outcome.status} ${outcome.code ?? ''}, request-id ${outcome.requestId ?? '?'})`, diagnoseGraph(outcome.status, outcome.code, outcome.message), outcome.message ?? '');
  } finally {
    await http.close().catch(() => undefined);
  }
}

export async function runCheck(config: RelayConfig, options: CheckOptions): Promise<number> {
  const ok = await runCheckStages(config, options, (step) => {
    options.out.write(`${step.status === 'fail' ? 'FAIL' : step.status.padEnd(4)}  ${step.message}\n`);
    if (step.fix) options.out.write(`      fix: ${step.fix}\n`);
  });
  return ok ? 0 : 1;
}
