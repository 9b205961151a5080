/**
 * `smtp-graph-relay check` against the emulator's real error responses: a distinct, correct
 * diagnosis for each failure, exit 0 only when sending works, and never a secret in the output.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { runCheck } from '../../src/ops/check.js';
import { CLIENT_ID, CLIENT_SECRET, MAILBOX, relayConfigInput, startTestEmulator, TENANT } from '../helpers/harness.js';

let emu: RunningEmulator;
beforeAll(async () => {
  emu = await startTestEmulator({
    apps: [
      { clientId: CLIENT_ID, tenantId: TENANT, secrets: [CLIENT_SECRET], expiredSecrets: ['old-secret'], roles: ['Mail.Send', 'User.Read.All'] },
      { clientId: 'no-perms', tenantId: TENANT, secrets: [CLIENT_SECRET], roles: [] },
      { clientId: 'public', tenantId: TENANT, secrets: [], roles: [], publicClient: true, delegatedScopes: ['Mail.Send'] },
      { clientId: 'public-rw', tenantId: TENANT, secrets: [], roles: [], publicClient: true, delegatedScopes: ['Mail.Send', 'Mail.ReadWrite'] },
      { clientId: 'no-consent', tenantId: TENANT, secrets: [], roles: [], publicClient: true, delegatedScopes: [] },
    ],
    users: [
      { username: MAILBOX, password: 'right' },
      { username: 'mfa@contoso.example', password: 'right', block: '50076' },
      { username: 'enrol@contoso.example', password: 'right', block: '50079' },
      { username: 'ca@contoso.example', password: 'right', block: '53003' },
    ],
    mailboxes: [
      { upn: MAILBOX, displayName: 'Relay' },
      { upn: 'onprem@contoso.example', displayName: 'On-prem', restEnabled: false },
      { upn: 'scoped-out@contoso.example', displayName: 'Outside policy', outsideAppScope: true },
    ],
  });
  emu.mail.enforceSendAs = true;
});
afterAll(async () => {
  await emu.close();
});

async function check(graph: Record<string, unknown>, args: { sendTo?: string; from?: string } = {}) {
  let output = '';
  const out = new Writable({
    write(chunk, _e, cb) {
      output += chunk.toString();
      cb();
    },
  });
  const config = validateConfig(relayConfigInput(emu, '/tmp/unused-spool', { graph }), {}, 'test');
  const code = await runCheck(config, { out, extraCaPem: [emu.caPem], ...args });
  return { code, output };
}

const secret = (value: string, clientId = CLIENT_ID) => ({ clientId, auth: { method: 'clientSecret', clientSecret: value } });
const password = (username: string, pw = 'right', clientId = 'public') => ({ clientId, auth: { method: 'password', username, password: pw } });

describe('check diagnoses', () => {
  it('passes end to end and exits 0 when a test message is accepted', async () => {
    const { code, output } = await check({}, { sendTo: 'you@contoso.example' });
    expect(code).toBe(0);
    expect(output).toMatch(/ok {4}token acquired/);
    expect(output).toMatch(/ok {4}mailbox relay@contoso\.example exists/);
    expect(output).toMatch(/ok {4}test message from relay@contoso\.example accepted by Graph for you@contoso\.example \(request-id [0-9a-f-]{36}\)/);
    expect(emu.mail.delivered.at(-1)?.recipients).toEqual(['you@contoso.example']);
  });

  it.each([
    ['a wrong secret', secret('wrong-secret'), 'AADSTS7000215', 'the client secret is wrong'],
    ['an expired secret', secret('old-secret'), 'AADSTS7000222', 'the client secret has expired'],
    ['an unknown app', secret(CLIENT_SECRET, 'ghost-app'), 'AADSTS700016', 'no application with this client ID'],
    ['an unknown tenant', { tenantId: 'wrong-tenant' }, 'AADSTS90002', 'the tenant was not found'],
    ['a bad password', password(MAILBOX, 'wrong'), 'AADSTS50126', 'the username or password is wrong'],
    ['MFA required', password('mfa@contoso.example'), 'AADSTS50076', 'the account requires multi-factor authentication'],
    ['MFA registration required', password('enrol@contoso.example'), 'AADSTS50079', 'the account must register for multi-factor authentication'],
    ['a Conditional Access block', password('ca@contoso.example'), 'AADSTS53003', 'a Conditional Access policy blocks this sign-in'],
    ['missing consent', password(MAILBOX, 'right', 'no-consent'), 'AADSTS65001', "nobody has consented to the app's permissions"],
  ])('token stage: %s', async (_what, graph, code, cause) => {
    const result = await check(graph);
    expect(result.code).toBe(1);
    expect(result.output).toContain(`FAIL  token (${code}): ${cause}`);
    expect(result.output).toMatch(/\n {6}fix: \S/);
  });

  it('warns in advance when Mail.ReadWrite (needed for messages over 3 MB) is missing', async () => {
    const { code, output } = await check({});
    expect(code).toBe(0);
    expect(output).toContain('warn  no Mail.ReadWrite: messages over 3 MB');
  });

  it('delegated sign-ins ask for Mail.ReadWrite when large messages are enabled, and check says so', async () => {
    const granted = await check(password(MAILBOX, 'right', 'public-rw'));
    expect(granted.code).toBe(0);
    expect(granted.output).toContain('ok    token grants Mail.Send and Mail.ReadWrite (delegated)');
    expect(granted.output).toContain("upload sessions work only in the signed-in user's own mailbox");
    const missing = await check(password(MAILBOX, 'right', 'public'));
    expect(missing.output).toContain('warn  no Mail.ReadWrite');
    expect(missing.output).toContain('add Mail.ReadWrite as a *Delegated* permission');
    const app = await check({});
    expect(app.output).toContain('add Mail.ReadWrite as a *Application* permission');
  });

  it('a token without Mail.Send: permission missing', async () => {
    const result = await check(secret(CLIENT_SECRET, 'no-perms'));
    expect(result.code).toBe(1);
    expect(result.output).toContain('FAIL  permission: the token carries no Mail.Send permission');
    expect(result.output).toContain('Grant admin consent');
  });

  it.each([
    ['an unknown mailbox', { mailbox: 'nobody@contoso.example' }, {}, 'FAIL  mailbox nobody@contoso.example (HTTP 404 ErrorInvalidUser): no such user in the tenant'],
    ['a mailbox not enabled for REST', { mailbox: 'onprem@contoso.example' }, { sendTo: 'x@contoso.example' }, 'FAIL  sendMail (HTTP 404 MailboxNotEnabledForRESTAPI'],
    ['a mailbox outside the app access policy', { mailbox: 'scoped-out@contoso.example' }, { sendTo: 'x@contoso.example' }, 'outside the scope the app may use (application access policy or Exchange RBAC for Applications)'],
    ['Send As denied for a device From address', {}, { sendTo: 'x@contoso.example', from: 'scanner@contoso.example' }, 'the mailbox may not send as the From address'],
  ])('Graph stage: %s', async (_what, graph, args, expected) => {
    const result = await check(graph, args);
    expect(result.code).toBe(1);
    expect(result.output).toContain(expected);
  });

  it('gives a distinct diagnosis for every failure and never prints a secret', async () => {
    const outputs = await Promise.all([secret('wrong-secret'), secret('old-secret'), password(MAILBOX, 'wrong')].map((g) => check(g)));
    const causes = outputs.map((o) => /FAIL {2}[^\n]*/.exec(o.output)?.[0]);
    expect(new Set(causes).size).toBe(3);
    for (const { output } of outputs) {
      expect(output).not.toContain('wrong-secret');
      expect(output).not.toContain('old-secret');
      expect(output).not.toContain(CLIENT_SECRET);
    }
  });
});
