/**
 * The emulator itself, driven over HTTPS the way Graph clients use it: the token endpoint's grants
 * and Entra-shaped errors, sendMail in MIME and JSON form, drafts with upload sessions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpTransport, type HttpTransport } from '../../src/graph/http-transport.js';
import { HttpGraphMailer } from '../../src/graph/mailer.js';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { CLIENT_ID, CLIENT_SECRET, MAILBOX, startTestEmulator, TENANT } from '../helpers/harness.js';

let emu: RunningEmulator;
let http: HttpTransport;
beforeAll(async () => {
  emu = await startTestEmulator({
    users: [
      { username: MAILBOX, password: 'pw' },
      { username: 'mfa@contoso.example', password: 'pw', block: '50076' },
    ],
  });
  emu.identity.apps.get(CLIENT_ID)!.publicClient = true;
  emu.identity.apps.get(CLIENT_ID)!.delegatedScopes = ['Mail.Send'];
  http = createHttpTransport({ extraCaPem: [emu.caPem], timeoutMs: 5000 });
});
afterAll(async () => {
  await http.close();
  await emu.close();
});

async function token(form: Record<string, string>, tenant = TENANT) {
  const res = await http.request(`${emu.url}/${tenant}/oauth2/v2.0/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });
  return { status: res.status, body: JSON.parse(res.body.toString()) as Record<string, unknown> };
}

const appToken = async () => (await token({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: `${emu.url}/.default` })).body.access_token as string;

async function graph(method: string, path: string, body?: string | object, headers: Record<string, string> = {}) {
  const auth: Record<string, string> = headers.authorization === undefined ? { authorization: `Bearer ${await appToken()}` } : {};
  const res = await http.request(path.startsWith('https:') ? path : `${emu.url}/v1.0${path}`, {
    method,
    headers: { ...auth, 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json', ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  return { status: res.status, headers: res.headers, json: res.body.length ? (JSON.parse(res.body.toString()) as Record<string, any>) : null };
}

describe('identity emulator', () => {
  it('issues app-only tokens for a correct secret, always with expires_in', async () => {
    const { status, body } = await token({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: `${emu.url}/.default` });
    expect(status).toBe(200);
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599 });
  });

  it.each([
    ['a wrong secret', { client_secret: 'nope' }, TENANT, 401, 'invalid_client', 7000215],
    ['an unknown client id', { client_id: 'ghost' }, TENANT, 400, 'unauthorized_client', 700016],
    ['an unknown tenant', {}, 'no-such-tenant', 400, 'invalid_request', 90002],
  ] as const)('answers %s with the Entra error shape', async (_what, override, tenant, status, error, code) => {
    const res = await token({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: `${emu.url}/.default`, ...override }, tenant);
    expect(res.status).toBe(status);
    expect(res.body).toMatchObject({ error, error_codes: [code], trace_id: expect.any(String), correlation_id: expect.any(String) });
    expect(res.body.error_description).toMatch(new RegExp(`^AADSTS${code}: .*\\r\\nTrace ID: .*\\r\\nCorrelation ID: .*\\r\\nTimestamp: `, 's'));
  });

  it('runs the password grant, refuses MFA accounts with AADSTS50076, and refreshes', async () => {
    const ok = await token({ grant_type: 'password', client_id: CLIENT_ID, username: MAILBOX, password: 'pw', scope: 'Mail.Send openid profile offline_access' });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ refresh_token: expect.any(String), id_token: expect.any(String), client_info: expect.any(String) });
    const mfa = await token({ grant_type: 'password', client_id: CLIENT_ID, username: 'mfa@contoso.example', password: 'pw', scope: 'Mail.Send' });
    expect(mfa.body).toMatchObject({ error: 'invalid_grant', error_codes: [50076], suberror: 'basic_action' });
    const bad = await token({ grant_type: 'password', client_id: CLIENT_ID, username: MAILBOX, password: 'wrong', scope: 'Mail.Send' });
    expect(bad.body).toMatchObject({ error: 'invalid_grant', error_codes: [50126] });
    const refreshed = await token({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: ok.body.refresh_token as string, scope: 'Mail.Send' });
    expect(refreshed.status).toBe(200);
  });

  it('runs the device-code flow: pending until approved', async () => {
    const res = await http.request(`${emu.url}/${TENANT}/oauth2/v2.0/devicecode`, { method: 'POST', body: new URLSearchParams({ client_id: CLIENT_ID, scope: 'Mail.Send offline_access' }).toString() });
    const code = JSON.parse(res.body.toString()) as Record<string, string>;
    expect(code).toMatchObject({ user_code: expect.any(String), verification_uri: `${emu.url}/devicelogin`, expires_in: 900 });
    const pending = await token({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: CLIENT_ID, device_code: code.device_code as string });
    expect(pending.body).toMatchObject({ error: 'authorization_pending', error_codes: [70016] });
    expect(emu.identity.approveDeviceCode(code.user_code as string, MAILBOX)).toBe(true);
    const done = await token({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: CLIENT_ID, device_code: code.device_code as string });
    expect(done.status).toBe(200);
  });

  it('serves OpenID metadata and instance discovery', async () => {
    const meta = JSON.parse((await http.request(`${emu.url}/${TENANT}/v2.0/.well-known/openid-configuration`, { method: 'GET' })).body.toString());
    expect(meta.token_endpoint).toBe(`${emu.url}/${TENANT}/oauth2/v2.0/token`);
    const discovery = JSON.parse((await http.request(`${emu.url}/common/discovery/instance?api-version=1.1`, { method: 'GET' })).body.toString());
    expect(discovery.metadata[0].aliases).toEqual([new URL(emu.url).host]);
  });
});

describe('Graph mail emulator', () => {
  it('accepts MIME sendMail with 202 and records To/Cc/Bcc recipients', async () => {
    const mime = Buffer.from('From: relay@contoso.example\r\nTo: a@x.example\r\nCc: b@x.example\r\nBcc: c@x.example\r\nSubject: s\r\n\r\nbody\r\n');
    const res = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/sendMail`, mime.toString('base64'));
    expect(res.status).toBe(202);
    expect(res.headers['request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const last = emu.mail.delivered.at(-1);
    expect(last?.recipients).toEqual(['a@x.example', 'b@x.example', 'c@x.example']);
    expect(last?.mime?.equals(mime)).toBe(true);
  });

  it('accepts JSON sendMail', async () => {
    const res = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/sendMail`, { message: { subject: 'json', body: { contentType: 'Text', content: 'x' }, toRecipients: [{ emailAddress: { address: 'j@x.example' } }] }, saveToSentItems: 'false' });
    expect(res.status).toBe(202);
    expect(emu.mail.delivered.at(-1)).toMatchObject({ via: 'json', recipients: ['j@x.example'] });
  });

  it.each([
    ['invalid base64', 'not base64!!', 400, 'ErrorMimeContentInvalidBase64String'],
    ['no recipients', Buffer.from('Subject: none\r\n\r\nx\r\n').toString('base64'), 400, 'ErrorInvalidRecipients'],
    ['a body over 4 MB', 'A'.repeat(4 * 1024 * 1024 + 4), 413, 'BadRequest'],
  ])('rejects %s with the Graph error shape', async (_what, body, status, code) => {
    const res = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/sendMail`, body);
    expect(res.status).toBe(status);
    expect(res.json).toMatchObject({ error: { code, message: expect.any(String), innerError: { 'request-id': expect.any(String), date: expect.any(String) } } });
  });

  it('keeps a hostile mailbox name inside one path segment (no traversal to other endpoints)', async () => {
    const mailer = new HttpGraphMailer(emu.url, http);
    const outcome = await mailer.sendMime('../../me/sendMail?x=', Buffer.from('To: a@x.example\r\n\r\nx\r\n'), await appToken());
    expect(outcome).toMatchObject({ kind: 'http', status: 404, code: 'ErrorInvalidUser' });
    expect(emu.mail.requests.at(-1)?.mailbox).toBe('../../me/sendmail?x=');
  });

  it('answers 401 without a token and 404 ErrorInvalidUser for an unknown mailbox', async () => {
    expect((await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/sendMail`, 'eA==', { authorization: '' })).json?.error.code).toBe('InvalidAuthenticationToken');
    expect((await graph('POST', '/users/ghost%40contoso.example/sendMail', 'eA==')).json?.error.code).toBe('ErrorInvalidUser');
    expect((await graph('GET', `/users/${encodeURIComponent(MAILBOX)}`)).json).toMatchObject({ userPrincipalName: MAILBOX });
  });

  it('creates a draft, uploads a large attachment in ordered chunks (Content-Range checked) and sends it', async () => {
    const mime = Buffer.from('From: relay@contoso.example\r\nTo: big@x.example\r\nSubject: big\r\n\r\nsee attachment\r\n');
    const draft = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/messages`, mime.toString('base64'));
    expect(draft.status).toBe(201);
    const size = 5 * 1024 * 1024;
    const bytes = Buffer.alloc(size, 7);
    const small = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/messages/${draft.json?.id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'tiny.bin', size: 1000 } });
    expect(small.json?.error.code).toBe('ErrorAttachmentSizeShouldNotBeLessThanMinimumSize');
    const session = await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/messages/${draft.json?.id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'scan.pdf', size, contentType: 'application/pdf' } });
    expect(session.status).toBe(201);
    const url = session.json?.uploadUrl as string;
    const put = (start: number, end: number) => http.request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${end}/${size}` }, body: bytes.subarray(start, end + 1) });
    expect((await put(1000, 1999)).status).toBe(416); // out of order
    const first = await put(0, 3 * 1024 * 1024 - 1);
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body.toString()).NextExpectedRanges).toEqual([String(3 * 1024 * 1024)]);
    const last = await put(3 * 1024 * 1024, size - 1);
    expect(last.status).toBe(201);
    expect(last.headers.location).toBeDefined();
    expect(emu.mail.uploadAuthorizationHeaders).toBe(0);
    expect((await graph('POST', `/users/${encodeURIComponent(MAILBOX)}/messages/${draft.json?.id}/send`)).status).toBe(202);
    const sent = emu.mail.delivered.at(-1);
    expect(sent).toMatchObject({ via: 'draft', recipients: ['big@x.example'] });
    expect(sent?.attachments[0]?.bytes.equals(bytes)).toBe(true);
  });
});
