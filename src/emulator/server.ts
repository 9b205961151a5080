/**
 * The local identity + Graph emulator over real HTTPS (a CA generated at start), used by demo mode,
 * the tests and the benchmark. One process-local object exposes its state for assertions and
 * fault injection; nothing here is used in production paths.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { FaultPlan, type EmulatorRoute, type FaultRule } from './faults.js';
import { GraphMailState, graphErrorBody, mimeFromCandidates, mimeRecipients, type DeliveredAttachment, type EmulatedMailbox, type GraphError } from './graph-mail.js';
import { BodyTooLarge, readBody, sendJson } from './http-util.js';
import { aadError, IdentityEmulator, type EmulatedApp, type EmulatedUser, type IssuedToken } from './identity.js';
import { createTestPki } from './test-pki.js';

export interface EmulatorOptions {
  host?: string;
  port?: number;
  /** Where each accepted message is written as .eml (null: keep in memory only). */
  outDir?: string | null;
  tenantId?: string;
  /** More tenants served by the same emulator (several tenants behind one relay). */
  extraTenants?: string[];
  apps?: EmulatedApp[];
  users?: EmulatedUser[];
  mailboxes?: EmulatedMailbox[];
}

export interface RunningEmulator {
  /** https://127.0.0.1:PORT - both the authority host and the Graph endpoint. */
  url: string;
  caPem: string;
  identity: IdentityEmulator;
  mail: GraphMailState;
  faults: FaultPlan;
  /** Client port of every TCP connection accepted (proxy tests match them to the proxy's sockets). */
  connectionPorts: number[];
  close(): Promise<void>;
}

const SEND_PERMISSIONS = ['Mail.Send'];
const DRAFT_PERMISSIONS = ['Mail.ReadWrite'];

function graphError(status: number, code: string, message: string, headers?: Record<string, string>): GraphError {
  return { status, code, message, ...(headers ? { headers } : {}) };
}

function decodeBase64Strict(text: string): Buffer | null {
  const compact = text.replace(/[\r\n\t ]/g, '');
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return null;
  return Buffer.from(compact, 'base64');
}

function parseContentRange(value: string | undefined): { start: number; end: number; total: number } | null {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(value ?? '');
  if (!match) return null;
  return { start: Number(match[1]), end: Number(match[2]), total: Number(match[3]) };
}

export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const host = options.host ?? '127.0.0.1';
  const pki = await createTestPki('smtp-graph-relay emulator CA');
  const { certPem, keyPem } = await pki.issueServerCertificate([host, 'localhost', '127.0.0.1', '::1']);
  let baseUrl = '';
  const tenantId = options.tenantId ?? 'emulated-tenant';
  const identity = new IdentityEmulator(() => baseUrl, () => baseUrl, new Set([tenantId, ...(options.extraTenants ?? [])]));
  const mail = new GraphMailState(options.outDir ?? null);
  const faults = new FaultPlan();
  for (const app of options.apps ?? []) identity.apps.set(app.clientId, app);
  for (const user of options.users ?? []) identity.users.set(user.username.toLowerCase(), user);
  for (const mailbox of options.mailboxes ?? []) mail.addMailbox(mailbox);

  const server: Server = createServer({ key: keyPem, cert: certPem }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, graphErrorBody(mail.newRequestId(), undefined, 'generalException', `emulator: ${(err as Error).message}`));
      else res.destroy();
    });
  });
  // When a request started, for the Retry-After check: a request that opened a new connection was
  // on its way from the moment the connection was accepted, not when its TLS handshake finished.
  const socketAcceptedAt = new WeakMap<object, number>();
  const connectionPorts: number[] = [];
  server.on('connection', (socket: import('node:net').Socket) => {
    socketAcceptedAt.set(socket, Date.now());
    if (socket.remotePort !== undefined) connectionPorts.push(socket.remotePort);
  });
  const requestStartedAt = (req: IncomingMessage): number => {
    const raw = (req.socket as unknown as { _parent?: object })._parent ?? req.socket;
    const accepted = socketAcceptedAt.get(raw);
    socketAcceptedAt.delete(raw); // only the first request of a connection
    return accepted ?? Date.now();
  };
  // Keep-alive sockets must not hold close() hostage.
  server.keepAliveTimeout = 5_000;

  async function applyFault(rule: FaultRule | null, req: IncomingMessage, res: ServerResponse, route: EmulatorRoute, mailbox: string | null): Promise<boolean> {
    if (!rule) return false;
    if (rule.delayMs) await new Promise((r) => setTimeout(r, rule.delayMs));
    if (rule.reset) {
      req.socket.destroy();
      return true;
    }
    if (rule.status === undefined) return false;
    const headers: Record<string, string> = {};
    if (rule.retryAfter !== undefined) {
      headers['retry-after'] = rule.retryAfter;
      const seconds = /^\d+(\.\d+)?$/.test(rule.retryAfter) ? Number(rule.retryAfter) : Math.max(0, (Date.parse(rule.retryAfter) - Date.now()) / 1000);
      if (mailbox) mail.noteRetryAfter(mailbox, seconds);
    }
    if (route === 'token') {
      const reply = aadError(rule.status, rule.code ?? 'temporarily_unavailable', 90000, rule.message ?? 'Injected fault.');
      sendJson(res, reply.status, reply.body, headers);
    } else {
      const requestId = mail.newRequestId();
      await drainQuietly(req);
      sendJson(res, rule.status, graphErrorBody(requestId, header(req, 'client-request-id'), rule.code ?? defaultCode(rule.status), rule.message ?? 'Injected fault.'), { ...headers, 'request-id': requestId });
    }
    return true;
  }

  async function drainQuietly(req: IncomingMessage): Promise<void> {
    try {
      await readBody(req, Number.MAX_SAFE_INTEGER);
    } catch {
      // ignore
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', baseUrl);
    const segments = url.pathname.split('/').slice(1);
    const method = req.method ?? 'GET';

    // --- identity ---
    if (method === 'GET' && segments.length === 4 && segments[1] === 'v2.0' && segments[2] === '.well-known' && segments[3] === 'openid-configuration') {
      return sendJson(res, 200, identity.openIdConfiguration(decodeURIComponent(segments[0] ?? '')));
    }
    if (method === 'GET' && url.pathname === '/common/discovery/instance') return sendJson(res, 200, identity.instanceDiscovery());
    if (method === 'POST' && segments.length === 4 && segments[1] === 'oauth2' && segments[2] === 'v2.0' && (segments[3] === 'token' || segments[3] === 'devicecode')) {
      const tenant = decodeURIComponent(segments[0] ?? '');
      if (await applyFault(faults.take('token', null), req, res, 'token', null)) return;
      const form = new URLSearchParams((await readBody(req, 1024 * 1024)).toString('utf8'));
      const basic = /^Basic (.+)$/.exec(header(req, 'authorization') ?? '')?.[1];
      const basicAuth = basic ? (([id, secret]) => ({ id: decodeURIComponent(id ?? ''), secret: decodeURIComponent(secret ?? '') }))(Buffer.from(basic, 'base64').toString('utf8').split(':')) : null;
      const reply = segments[3] === 'token' ? identity.token(tenant, form, basicAuth) : identity.deviceCode(tenant, form);
      return sendJson(res, reply.status, reply.body, { 'cache-control': 'no-store', ...(reply.headers ?? {}) });
    }
    if (method === 'GET' && url.pathname === '/devicelogin') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end('Emulator device login: codes are approved through the emulator API (or automatically in demo mode).\n');
    }

    // --- upload sessions (pre-authenticated URL, no bearer token expected) ---
    if (segments[0] === 'upload' && segments.length === 2) return handleUpload(req, res, segments[1] ?? '', method);

    // --- Graph ---
    if (segments[0] !== 'v1.0') return sendJson(res, 404, graphErrorBody(mail.newRequestId(), undefined, 'BadRequest', `Resource not found for the segment '${segments[0] ?? ''}'.`));
    let mailboxId: string | null;
    let rest: string[];
    if (segments[1] === 'me') {
      mailboxId = null;
      rest = segments.slice(2);
    } else if (segments[1] === 'users' && segments[2]) {
      mailboxId = decodeURIComponent(segments[2]);
      rest = segments.slice(3);
    } else {
      return sendJson(res, 400, graphErrorBody(mail.newRequestId(), undefined, 'BadRequest', 'Unsupported request.'));
    }
    const route = graphRoute(method, rest);
    const requestId = mail.newRequestId();
    const clientRequestId = header(req, 'client-request-id');
    const fail = async (error: GraphError) => {
      await drainQuietly(req);
      sendJson(res, error.status, graphErrorBody(requestId, clientRequestId, error.code, error.message), { 'request-id': requestId, 'client-request-id': clientRequestId ?? requestId, ...(error.headers ?? {}) });
    };
    if (!route) return await fail(graphError(400, 'BadRequest', `Unsupported ${method} ${url.pathname}.`));

    const auth = identity.lookup(header(req, 'authorization'));
    const mailboxKey = (mailboxId ?? auth.token?.user ?? '').toLowerCase();
    const record = { route, mailbox: mailboxKey || null, at: Date.now(), status: 0, authorization: Boolean(header(req, 'authorization')) } as (typeof mail.requests)[number];
    mail.requests.push(record);
    if (mailboxKey) mail.checkRetryAfter(mailboxKey, requestStartedAt(req), route);

    const handledAt = performance.now();
    /**
     * Set when the answer is held back for the rest of latencyMs: the slot stays taken until it
     * is written (not until the TLS write completes: the client may already have it and be sending
     * its next request). Every `return await fail(...)` so the finally below runs after the answer.
     */
    let answered: Promise<void> | null = null;
    const inFlight = (mail.inFlight.get(mailboxKey) ?? 0) + 1;
    mail.inFlight.set(mailboxKey, inFlight);
    mail.maxInFlightSeen.set(mailboxKey, Math.max(mail.maxInFlightSeen.get(mailboxKey) ?? 0, inFlight));
    try {
      if (await applyFault(faults.take(route, mailboxKey || null), req, res, route, mailboxKey || null)) return;
      if (inFlight > mail.concurrencyLimit) {
        mail.concurrencyThrottles += 1;
        mail.noteRetryAfter(mailboxKey, 1);
        return await fail(graphError(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', { 'retry-after': '1' }));
      }
      // latencyMs is Graph's whole answer time: the emulator's own work (reading the body, parsing
      // the MIME, recording) runs inside it, and the answer leaves once it has passed. Slept first
      // and worked after, a request took 100 ms plus that work, which under load cost the relay's
      // delivery figures several percent that Graph would not (bench figures 4 and 8).
      // Timed on the sub-millisecond clock and to the nearest half millisecond: one whole-millisecond
      // timer fires a little late on average, and held every answer 101-102 ms instead of 100 (bench
      // figure 8 printed it), a cost the relay's figures would carry and Graph's would not.
      if (mail.latencyMs > 0) {
        const due = handledAt + mail.latencyMs;
        const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
        res.end = ((...args: unknown[]) => {
          if (due - performance.now() <= 0.5) return end(...args);
          answered = new Promise<void>((resolve) => {
            const fire = () => {
              const left = due - performance.now();
              if (left > 0.5) return void setTimeout(fire, Math.max(1, Math.floor(left)));
              end(...args);
              resolve();
            };
            fire();
          });
          return res;
        }) as typeof res.end;
      }
      if (!auth.token) {
        return await fail(graphError(401, 'InvalidAuthenticationToken', auth.problem ?? 'Access token validation failure.', { 'www-authenticate': 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"' }));
      }
      const token = auth.token;
      if (mailboxId === null && !token.user) return await fail(graphError(400, 'BadRequest', '/me request is only valid with delegated authentication flow.'));
      const found = mail.mailboxes.get(mailboxKey);
      const mailbox = found && (!found.tenantId || found.tenantId === token.tenantId) ? found : undefined;
      if (!mailbox) return await fail(graphError(404, 'ErrorInvalidUser', `The requested user '${mailboxId ?? mailboxKey}' is invalid.`));
      if (route === 'getUser') {
        if (!token.user && !token.roles.some((r) => r === 'User.Read.All' || r === 'User.ReadBasic.All' || r === 'Directory.Read.All')) {
          return await fail(graphError(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.'));
        }
        await drainQuietly(req);
        return sendJson(res, 200, { id: Buffer.from(mailbox.upn).toString('hex').slice(0, 32), userPrincipalName: mailbox.upn, mail: mailbox.upn, displayName: mailbox.displayName }, { 'request-id': requestId });
      }
      if (mailbox.restEnabled === false) return await fail(graphError(404, 'MailboxNotEnabledForRESTAPI', 'The mailbox is either inactive, soft-deleted, or is hosted on-premise.'));
      if (mailbox.outsideAppScope && !token.user) return await fail(graphError(403, 'ErrorAccessDenied', 'Access to OData is disabled.'));
      if (token.user && token.user !== mailboxKey) return await fail(graphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.'));
      const needs = route === 'sendMail' || route === 'send' ? SEND_PERMISSIONS : DRAFT_PERMISSIONS;
      if (!hasPermission(token, needs)) return await fail(graphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.'));

      let body: Buffer;
      try {
        body = await readBody(req, mail.maxRequestBytes);
      } catch (err) {
        if (err instanceof BodyTooLarge) return await fail(graphError(413, 'BadRequest', 'The maximum request length supported is 4MB.'));
        throw err;
      }
      const isMime = (header(req, 'content-type') ?? '').toLowerCase().startsWith('text/plain');
      const sentBy = token.user ?? token.clientId;

      if (route === 'sendMail' || route === 'createMessage') {
        let mime: Buffer | undefined;
        let json: Record<string, unknown> | undefined;
        let recipients: string[];
        if (isMime) {
          const decoded = decodeBase64Strict(body.toString('latin1'));
          if (!decoded || decoded.length === 0) return await fail(graphError(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.'));
          mime = decoded;
          recipients = mimeRecipients(decoded);
          const allowed = new Set([mailboxKey, ...(mailbox.sendAs ?? []).map((a) => a.toLowerCase())]);
          if (mail.enforceSendAs && mimeFromCandidates(decoded).some((from) => !allowed.has(from))) {
            return await fail(graphError(403, 'ErrorSendAsDenied', 'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account. Cannot submit message.'));
          }
        } else {
          try {
            const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
            json = (route === 'sendMail' ? parsed.message : parsed) as Record<string, unknown>;
          } catch {
            return await fail(graphError(400, 'RequestBodyRead', 'Unable to read JSON request payload.'));
          }
          if (!json || typeof json !== 'object') return await fail(graphError(400, 'ErrorInvalidRequest', 'The message parameter is required.'));
          recipients = jsonRecipients(json);
        }
        if (route === 'sendMail') {
          if (recipients.length === 0) return await fail(graphError(400, 'ErrorInvalidRecipients', "At least one recipient is not valid., A message can't be sent because it contains no recipients."));
          mail.record({ mailbox: mailbox.upn, recipients, via: mime ? 'mime' : 'json', ...(mime ? { mime } : {}), ...(json ? { json } : {}), attachments: [], requestId, sentBy });
          res.writeHead(202, { 'request-id': requestId, 'client-request-id': clientRequestId ?? requestId, 'content-length': '0' });
          return void res.end();
        }
        const id = `AAMk${randomBytes(24).toString('base64url')}`;
        mail.drafts.set(id, { mailbox: mailbox.upn, ...(mime ? { mime } : {}), ...(json ? { json } : {}), attachments: [] });
        return sendJson(res, 201, { id, isDraft: true, subject: json?.subject ?? null }, { 'request-id': requestId });
      }

      const draftId = decodeURIComponent(rest[1] ?? '');
      const draft = mail.drafts.get(draftId);
      if (!draft || draft.mailbox.toLowerCase() !== mailboxKey) return await fail(graphError(404, 'ErrorItemNotFound', 'The specified object was not found in the store.'));
      if (route === 'deleteMessage') {
        mail.drafts.delete(draftId);
        mail.deletedDrafts += 1;
        // Its upload sessions go with it (a later PUT gets 404, as for an expired session).
        for (const [sid, upload] of mail.uploads) if (upload.draftId === draftId) mail.uploads.delete(sid);
        res.writeHead(204, { 'request-id': requestId });
        return void res.end();
      }

      if (route === 'uploadSession' && rest.length === 3) {
        // POST .../attachments: small attachment (< 3 MB) in one JSON request.
        const att = JSON.parse(body.toString('utf8')) as { name?: string; contentType?: string; contentBytes?: string; isInline?: boolean; contentId?: string };
        draft.attachments.push({ name: att.name ?? 'attachment', contentType: att.contentType ?? 'application/octet-stream', isInline: att.isInline === true, ...(att.contentId ? { contentId: att.contentId } : {}), bytes: Buffer.from(att.contentBytes ?? '', 'base64') });
        return sendJson(res, 201, { id: `AAMkAtt${draft.attachments.length}`, name: att.name }, { 'request-id': requestId });
      }
      if (route === 'uploadSession') {
        const item = (JSON.parse(body.toString('utf8')) as { AttachmentItem?: { name?: string; size?: number; contentType?: string; isInline?: boolean; contentId?: string } }).AttachmentItem;
        if (!item || typeof item.size !== 'number' || !item.name) return await fail(graphError(400, 'ErrorInvalidRequest', 'AttachmentItem with name and size is required.'));
        // Upload sessions are documented for 3 MB to 150 MB and accepted from 2 MiB (graph-api-facts §9):
        // the emulator takes the documented lower end, so a relay that opened a session for a small
        // attachment would be told, and one that posts a 3 MiB attachment as JSON hits the 4 MB limit.
        if (item.size < mail.uploadSessionMinimum) return await fail(graphError(400, 'ErrorAttachmentSizeShouldNotBeLessThanMinimumSize', 'Attachment size must be greater than the minimum size.'));
        if (item.size > 150 * 1024 * 1024) return await fail(graphError(400, 'ErrorAttachmentSizeExceeded', 'The attachment exceeds the maximum size of 150 MB.'));
        const sid = randomBytes(16).toString('hex');
        mail.uploadMailboxes.set(sid, mailboxKey);
        mail.uploads.set(sid, { mailbox: mailboxKey, draftId, name: item.name, size: item.size, contentType: item.contentType ?? 'application/octet-stream', isInline: item.isInline === true, ...(item.contentId ? { contentId: item.contentId } : {}), chunks: [], next: 0, authHeaderSeen: false });
        return sendJson(res, 201, { '@odata.context': `${baseUrl}/v1.0/$metadata#microsoft.graph.uploadSession`, uploadUrl: `${baseUrl}/upload/${sid}?authtoken=${randomBytes(16).toString('base64url')}`, expirationDateTime: new Date(Date.now() + 86_400_000).toISOString(), nextExpectedRanges: ['0-'] }, { 'request-id': requestId });
      }
      // route === 'send'
      const recipients = draft.mime ? mimeRecipients(draft.mime) : jsonRecipients(draft.json ?? {});
      if (recipients.length === 0) return await fail(graphError(400, 'ErrorInvalidRecipients', "At least one recipient is not valid., A message can't be sent because it contains no recipients."));
      mail.drafts.delete(draftId);
      mail.record({ mailbox: mailbox.upn, recipients, via: 'draft', ...(draft.mime ? { mime: draft.mime } : {}), ...(draft.json ? { json: draft.json } : {}), attachments: draft.attachments, requestId, sentBy });
      res.writeHead(202, { 'request-id': requestId, 'content-length': '0' });
      return void res.end();
    } finally {
      if (answered) await answered;
      mail.inFlight.set(mailboxKey, (mail.inFlight.get(mailboxKey) ?? 1) - 1);
      record.status = res.statusCode;
      record.doneAt = Date.now();
    }
  }

  async function handleUpload(req: IncomingMessage, res: ServerResponse, sid: string, method: string): Promise<void> {
    const session = mail.uploads.get(sid);
    const requestId = mail.newRequestId();
    // The upload URL belongs to the draft's mailbox: its requests count against that mailbox's
    // limits and its Retry-After like any other (graph-api-facts §9).
    const mailboxKey = (session?.mailbox ?? mail.uploadMailboxes.get(sid) ?? '').toLowerCase();
    const record = { route: 'upload', mailbox: mailboxKey || null, at: Date.now(), status: 0, authorization: Boolean(header(req, 'authorization')) };
    mail.requests.push(record);
    res.once('finish', () => (record.status = res.statusCode));
    if (mailboxKey) mail.checkRetryAfter(mailboxKey, requestStartedAt(req), 'upload');
    if (header(req, 'authorization')) mail.uploadAuthorizationHeaders += 1;
    if (await applyFault(faults.take('upload', mailboxKey || null), req, res, 'upload', mailboxKey || null)) return;
    if (!session) {
      await drainQuietly(req);
      return sendJson(res, 404, graphErrorBody(requestId, undefined, 'ErrorItemNotFound', 'The upload session was not found or has expired.'));
    }
    if (method === 'DELETE') {
      mail.uploads.delete(sid);
      res.writeHead(204);
      return void res.end();
    }
    if (method === 'GET') {
      // Where the session stands, as the PUT answers say it (OneDrive documents this GET; Outlook's
      // intermediate answers carry the same NextExpectedRanges, graph-api-facts §2.1).
      return sendJson(res, 200, { ExpirationDateTime: new Date(Date.now() + 86_400_000).toISOString(), NextExpectedRanges: [`${session.next}-`] });
    }
    if (method !== 'PUT') return sendJson(res, 405, graphErrorBody(requestId, undefined, 'BadRequest', 'Use PUT.'));
    const range = parseContentRange(header(req, 'content-range'));
    const body = await readBody(req, 4 * 1024 * 1024).catch(() => null);
    if (!body) return sendJson(res, 413, graphErrorBody(requestId, undefined, 'BadRequest', 'Upload chunks must be smaller than 4 MB.'));
    if (!range || range.total !== session.size || range.start !== session.next || range.end - range.start + 1 !== body.length || range.end >= session.size) {
      return sendJson(res, 416, graphErrorBody(requestId, undefined, 'ErrorInvalidRange', `Expected Content-Range starting at ${session.next} of ${session.size}, got '${header(req, 'content-range') ?? ''}' with ${body.length} bytes.`));
    }
    session.chunks.push(body);
    session.next = range.end + 1;
    if (session.next < session.size) {
      return sendJson(res, 200, { ExpirationDateTime: new Date(Date.now() + 86_400_000).toISOString(), NextExpectedRanges: [`${session.next}`] });
    }
    mail.uploads.delete(sid);
    const draft = mail.drafts.get(session.draftId);
    const attachment: DeliveredAttachment = { name: session.name, contentType: session.contentType, isInline: session.isInline, ...(session.contentId ? { contentId: session.contentId } : {}), bytes: Buffer.concat(session.chunks) };
    draft?.attachments.push(attachment);
    res.writeHead(201, { location: `${baseUrl}/v1.0/attachments/${sid}`, 'content-length': '0' });
    res.end();
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  baseUrl = `https://${host.includes(':') ? `[${host}]` : host}:${address.port}`;

  return {
    url: baseUrl,
    caPem: pki.caPem,
    identity,
    mail,
    faults,
    connectionPorts,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Graph mail routes under /users/{id} or /me: method and the path segments after the mailbox. */
const GRAPH_ROUTES: ReadonlyArray<[method: string, pattern: RegExp, route: EmulatorRoute]> = [
  ['POST', /^sendmail$/i, 'sendMail'],
  ['GET', /^$/, 'getUser'],
  ['POST', /^messages$/, 'createMessage'],
  ['POST', /^messages\/[^/]+\/attachments(\/createUploadSession)?$/, 'uploadSession'],
  ['POST', /^messages\/[^/]+\/send$/, 'send'],
  ['DELETE', /^messages\/[^/]+$/, 'deleteMessage'],
];

function graphRoute(method: string, rest: string[]): EmulatorRoute | null {
  const path = rest.join('/');
  return GRAPH_ROUTES.find(([m, pattern]) => m === method && pattern.test(path))?.[2] ?? null;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function hasPermission(token: IssuedToken, needs: string[]): boolean {
  const granted = token.user ? token.scopes : token.roles;
  return needs.every((n) => granted.includes(n));
}

function defaultCode(status: number): string {
  if (status === 429) return 'TooManyRequests';
  if (status === 503) return 'serviceNotAvailable';
  if (status === 401) return 'InvalidAuthenticationToken';
  if (status >= 500) return 'generalException';
  return 'BadRequest';
}

function jsonRecipients(message: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const key of ['toRecipients', 'ccRecipients', 'bccRecipients']) {
    const list = message[key];
    if (Array.isArray(list)) {
      for (const r of list as Array<{ emailAddress?: { address?: string } }>) if (r.emailAddress?.address) out.push(r.emailAddress.address.toLowerCase());
    }
  }
  return [...new Set(out)];
}
