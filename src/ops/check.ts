/**
 * `smtp-graph-relay check`: the "Save and test your connection" step done properly. Each stage
 * prints what it did; a failure prints the cause and the fix. Exit 0 only when sending would work.
 */
import type { Writable } from 'node:stream';
import { createGraphClients } from '../app.js';
import type { RelayConfig } from '../config/schema.js';
import { parseGraphError } from '../graph/graph-error.js';
import { TokenError } from '../graph/token-provider.js';
import { formatRfc5322Date } from '../mime/rfc5322-date.js';
import { diagnoseAadsts, diagnoseGraph } from './diagnosis.js';

export interface CheckOptions {
  sendTo?: string | undefined;
  out: Writable;
  extraCaPem?: string[];
}

export async function runCheck(config: RelayConfig, options: CheckOptions): Promise<number> {
  const say = (line: string) => options.out.write(`${line}\n`);
  const { http, tokens, mailer } = await createGraphClients(config, options.extraCaPem);
  try {
    say(`ok    configuration is valid (auth: ${tokens.description})`);
    let token: string;
    try {
      token = await tokens.getToken();
      say(`ok    token acquired from ${config.graph.authorityHost}`);
    } catch (err) {
      const e = err instanceof TokenError ? err : new TokenError(String(err), 'unknown_error', false);
      const d = diagnoseAadsts(e.aadsts);
      say(`FAIL  token: ${e.aadsts ? `AADSTS${e.aadsts} ` : ''}${d ? d.cause : e.message}`);
      if (d) say(`      fix: ${d.fix}`);
      else if (e.transient) say('      fix: check network access to the authority host (proxy, firewall, DNS)');
      return 1;
    }
    const mailbox = config.graph.mailbox;
    if (!mailbox) {
      say('FAIL  graph.mailbox is not set: the relay has no mailbox to send from');
      return 1;
    }
    const lookup = await http.request(`${config.graph.endpoint.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}`, { method: 'GET', headers: { authorization: `Bearer ${token}` } });
    if (lookup.status === 200) say(`ok    mailbox ${mailbox} exists`);
    else {
      const info = parseGraphError(lookup.body, lookup.headers);
      if (lookup.status === 403) say(`note  mailbox lookup not permitted (${info.code ?? 403}); the app needs User.Read.All only for this check, not for sending`);
      else {
        const d = diagnoseGraph(lookup.status, info.code);
        say(`FAIL  mailbox ${mailbox}: HTTP ${lookup.status} ${info.code ?? ''} ${d ? `- ${d.cause}` : info.message ?? ''}`.trimEnd());
        if (d) say(`      fix: ${d.fix}`);
        return 1;
      }
    }
    if (!options.sendTo) {
      say('note  no test message sent (add --send-to ADDRESS to prove sending end to end)');
      return 0;
    }
    const mime = Buffer.from(
      `From: ${mailbox}\r\nTo: ${options.sendTo}\r\nSubject: smtp-graph-relay connection test\r\nDate: ${formatRfc5322Date(Date.now())}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis message was sent by "smtp-graph-relay check". Sending works.\r\n`,
    );
    const outcome = await mailer.sendMime(mailbox, mime, token);
    if (outcome.kind === 'http' && outcome.status === 202) {
      say(`ok    test message accepted by Graph for ${options.sendTo} (request-id ${outcome.requestId ?? '?'})`);
      return 0;
    }
    if (outcome.kind === 'network') {
      say(`FAIL  sendMail: network error ${outcome.code ?? ''} ${outcome.message}`);
      return 1;
    }
    const d = diagnoseGraph(outcome.status, outcome.code);
    say(`FAIL  sendMail: HTTP ${outcome.status} ${outcome.code ?? ''}${d ? ` - ${d.cause}` : outcome.message ? ` - ${outcome.message}` : ''} (request-id ${outcome.requestId ?? '?'})`);
    if (d) say(`      fix: ${d.fix}`);
    return 1;
  } finally {
    await http.close().catch(() => undefined);
  }
}
