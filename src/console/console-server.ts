/**
 * The console on the admin listener: GET / and /console/... (the JSON API keeps /queue, /metrics,
 * /healthz, /readyz). Protections, in order: admin-guard's Host and Origin rules (page-guard.ts);
 * with admin.token set, a login form whose success is a session cookie (HttpOnly, SameSite=Strict);
 * without it (loopback only, config/exposure.ts) a session is opened on the first visit; every
 * state-changing form carries the session's CSRF token.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { tokenMatches } from '../ops/admin-guard.js';
import type { Readiness } from '../ops/admin-server.js';
import { QueueCommandError, type QueueControl, type QueueState } from '../ops/queue-control.js';
import { parseDurationMs } from '../config/units.js';
import type { Activity } from './activity.js';
import type { ActivitySeries } from './shared-activity.js';
import { html, PAGE_HEADERS, STYLESHEET, type Markup } from './html.js';
import { refusePage } from './page-guard.js';
import { confirmPage, eventsPage, failedPage, formatAge, loginPage, matches, messagePage, overview, page, queuePage, testPage, type TokenState } from './pages.js';
import { FormTooLargeError, readForm, SESSION_COOKIE, Sessions, validCsrf, type Session } from './session.js';

export interface ConsoleDeps {
  queue: QueueControl;
  readiness: () => Promise<Readiness>;
  tokenStates: () => Promise<TokenState[]>;
  snapshot: () => { depth: number; held: number; oldestReceivedAt: number | null };
  activity: Activity;
  /** The per-minute figures of the overview: this node's, or the cluster's on the PostgreSQL spool. */
  series: () => Promise<ActivitySeries>;
  now: () => number;
  /** The host part of admin.listen (for the Host check). */
  listenHost: string;
  /** admin.token, when set: the console's login. */
  token?: string | undefined;
  mailbox?: string | undefined;
  sendTest: (to: string) => Promise<{ queueId: string } | { error: string }>;
  logger: Logger;
}

/** Handles a console request; false when the path is not the console's (the admin API's then). */
export type ConsoleHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

// An operator's working session; sliding, so an open console stays signed in while used.
const SESSION_TTL_MS = 8 * 60 * 60_000;
const MAX_FORM_BYTES = 16 * 1024;
const ID = /^[0-9A-Z]{19}$/;

function isConsolePath(pathname: string): boolean {
  return pathname === '/' || pathname === '/assets/style.css' || pathname === '/console' || pathname.startsWith('/console/');
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...PAGE_HEADERS, 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

/** The posted form, or null once a body over MAX_FORM_BYTES has been answered with 413. */
async function readFormOr413(req: IncomingMessage, res: ServerResponse): Promise<FormData | null> {
  try {
    return await readForm(req, MAX_FORM_BYTES);
  } catch (err) {
    if (!(err instanceof FormTooLargeError)) throw err;
    send(res, 413, 'form too large');
    return null;
  }
}

function redirect(res: ServerResponse, location: string, headers: Record<string, string> = {}): void {
  res.writeHead(303, { location, 'cache-control': 'no-store', ...headers });
  res.end();
}

export function createConsole(deps: ConsoleDeps): ConsoleHandler {
  const sessions = new Sessions(SESSION_TTL_MS, deps.now);
  const loginRequired = deps.token !== undefined;

  const render = (res: ServerResponse, session: Session, title: string, current: string, body: Markup, status = 200) =>
    send(res, status, page(title, current, body, { csrf: session.csrf, loggedIn: loginRequired }));

  const refuseForm = (res: ServerResponse, session: Session) =>
    render(res, session, 'Refused', '', html`<div class="notice fail">The form has expired or did not come from this console (CSRF token missing or wrong). Reload the page and try again.</div>`, 403);

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://console');
    if (!isConsolePath(url.pathname)) return false;
    const method = req.method ?? 'GET';
    if (refusePage(req, res, deps.listenHost, (refusal) => deps.logger.warn({ event: 'admin.refused', status: refusal.status, reason: refusal.reason, method, path: url.pathname, remote: req.socket.remoteAddress }, 'console request refused'))) {
      return true;
    }
    if (method === 'GET' && url.pathname === '/assets/style.css') {
      send(res, 200, STYLESHEET, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=300' });
      return true;
    }

    let session = sessions.find(req);
    if (url.pathname === '/console/login') {
      if (!loginRequired) {
        redirect(res, '/');
        return true;
      }
      if (method === 'POST') {
        const form = await readFormOr413(req, res);
        if (!form) return true;
        const token = form.get('token');
        if (typeof token === 'string' && tokenMatches(token, deps.token as string)) {
          const created = sessions.create();
          deps.logger.info({ event: 'console.login', remote: req.socket.remoteAddress }, 'console signed in');
          redirect(res, '/', { 'set-cookie': sessions.cookie(created) });
          return true;
        }
        deps.logger.warn({ event: 'console.login_failed', remote: req.socket.remoteAddress }, 'console sign-in with a wrong admin token');
        send(res, 401, page('Sign in', '', loginPage(true), null));
        return true;
      }
      send(res, 200, page('Sign in', '', loginPage(false), null));
      return true;
    }
    let setCookie: Record<string, string> = {};
    if (!session) {
      if (loginRequired) {
        if (method === 'GET') redirect(res, '/console/login');
        else send(res, 401, page('Sign in', '', loginPage(false), null));
        return true;
      }
      // No admin.token (loopback only): the session exists for the CSRF token.
      if (method !== 'GET') {
        send(res, 403, page('Refused', '', html`<div class="notice fail">No console session: open <a href="/">the console</a> first.</div>`, null));
        return true;
      }
      session = sessions.create();
      setCookie = { 'set-cookie': sessions.cookie(session) };
    }

    if (method === 'GET') {
      const body = await getPage(url, session);
      if (!body) {
        send(res, 404, page('Not found', '', html`<h1>Not found</h1><p><a href="/">Overview</a></p>`, { csrf: session.csrf, loggedIn: loginRequired }), setCookie);
        return true;
      }
      send(res, 200, page(body.title, body.current, body.markup, { csrf: session.csrf, loggedIn: loginRequired }), setCookie);
      return true;
    }
    if (method !== 'POST') {
      send(res, 405, 'method not allowed', { allow: 'GET, POST' });
      return true;
    }
    const form = await readFormOr413(req, res);
    if (!form) return true;
    if (!validCsrf(session, form)) {
      refuseForm(res, session);
      return true;
    }
    await postAction(url, form, session, res);
    return true;
  };

  async function getPage(url: URL, session: Session): Promise<{ title: string; current: string; markup: Markup } | null> {
    const now = deps.now();
    const path = url.pathname;
    if (path === '/' || path === '/console') {
      const snap = deps.snapshot();
      deps.activity.sampleDepth(snap.depth);
      const [readiness, tokens, failed, activity] = await Promise.all([deps.readiness(), deps.tokenStates(), deps.queue.list('failed'), deps.series()]);
      return { title: 'Overview', current: '/', markup: overview({ readiness, tokens, depth: snap.depth, held: snap.held, oldestReceivedAt: snap.oldestReceivedAt, failed: failed.length, activity, now }) };
    }
    if (path === '/console/queue') {
      const state = url.searchParams.get('state') ?? '';
      const query = (url.searchParams.get('q') ?? '').trim();
      const valid = ['queued', 'active', 'deferred', 'held', 'failed'].includes(state);
      const items = (await deps.queue.list(valid ? (state as QueueState) : undefined)).filter((i) => (valid || i.state !== 'failed') && matches(i, query));
      items.sort((a, b) => a.entry.receivedAt - b.entry.receivedAt);
      return { title: 'Queue', current: '/console/queue', markup: queuePage(items, valid ? state : '', query, now) };
    }
    if (path === '/console/failed') {
      const items = await deps.queue.list('failed');
      const bounceFor = (id: string) => {
        const events = deps.activity.about(id);
        if (events.some((e) => e.event === 'bounce.queued')) return 'sent';
        if (events.some((e) => e.event === 'bounce.failed')) return 'could not be queued';
        return 'not known (failed before the last start, or bounces are off)';
      };
      return { title: 'Failed', current: '/console/failed', markup: failedPage(items, bounceFor, now) };
    }
    if (path === '/console/failed/purge') {
      const olderThan = url.searchParams.get('olderThan') ?? '7d';
      const ms = parseDurationMs(olderThan);
      if (ms === null) return null;
      const count = (await deps.queue.list('failed')).filter((i) => (i.entry.failedAt ?? 0) < now - ms).length;
      return {
        title: 'Purge',
        current: '/console/failed',
        markup: confirmPage('Purge', `Delete ${count} failed message(s) that failed more than ${formatAge(ms)} ago? This cannot be undone.`, '/console/failed/purge', session.csrf, '/console/failed', { olderThan }),
      };
    }
    if (path === '/console/test') return { title: 'Send a test message', current: '/console/test', markup: testPage(session.csrf, deps.mailbox, null, '') };
    if (path === '/console/events') {
      const query = (url.searchParams.get('q') ?? '').trim().toLowerCase();
      const events = deps.activity.recent(500, query ? (r) => JSON.stringify(r).toLowerCase().includes(query) : undefined);
      return { title: 'Recent events', current: '/console/events', markup: eventsPage(events, query) };
    }
    const message = /^\/console\/message\/([^/]+)(\/delete)?$/.exec(path);
    if (message && ID.test(message[1] as string)) {
      const id = message[1] as string;
      const item = await deps.queue.show(id).catch((err: unknown) => {
        if (err instanceof QueueCommandError && err.status === 404) return null;
        throw err;
      });
      if (message[2]) {
        if (!item) return null;
        return {
          title: 'Delete',
          current: '/console/queue',
          markup: confirmPage('Delete', `Delete message ${id} (${item.state}, to ${item.entry.envelope.rcptTo.join(', ')})? It will not be delivered, and no bounce is sent.`, `/console/message/${id}/delete`, session.csrf, `/console/message/${id}`),
        };
      }
      return { title: `Message ${id}`, current: '/console/queue', markup: messagePage(id, item, deps.activity.about(id), session.csrf, now, doneText(url.searchParams.get('done'))) };
    }
    return null;
  }

  async function postAction(url: URL, form: FormData, session: Session, res: ServerResponse): Promise<void> {
    const path = url.pathname;
    if (path === '/console/logout') {
      sessions.end(session);
      return redirect(res, loginRequired ? '/console/login' : '/', { 'set-cookie': `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0` });
    }
    if (path === '/console/test') {
      const to = String(form.get('to') ?? '').trim();
      if (!/^[^\s@]+@[^\s@]+$/.test(to)) return render(res, session, 'Send a test message', '/console/test', testPage(session.csrf, deps.mailbox, 'Enter one e-mail address.', to), 400);
      const result = await deps.sendTest(to);
      if ('error' in result) return render(res, session, 'Send a test message', '/console/test', testPage(session.csrf, deps.mailbox, result.error, to), 502);
      deps.logger.info({ event: 'console.test_message', queueId: result.queueId }, 'test message queued from the console');
      return redirect(res, `/console/message/${result.queueId}?done=test`);
    }
    if (path === '/console/failed/purge') {
      if (form.get('confirm') !== 'yes') return redirect(res, '/console/failed');
      const ms = parseDurationMs(String(form.get('olderThan') ?? ''));
      if (ms === null) return redirect(res, '/console/failed');
      const purged = await deps.queue.purgeFailed(ms);
      deps.logger.info({ event: 'console.purge', purged }, 'failed messages purged from the console');
      return redirect(res, '/console/failed');
    }
    const action = /^\/console\/message\/([0-9A-Z]{19})\/(retry|hold|release|delete)$/.exec(path);
    if (!action) return render(res, session, 'Not found', '', html`<h1>Not found</h1>`, 404);
    const [, id, verb] = action as unknown as [string, string, 'retry' | 'hold' | 'release' | 'delete'];
    if (verb === 'delete' && form.get('confirm') !== 'yes') return redirect(res, `/console/message/${id}/delete`);
    try {
      if (verb === 'delete') await deps.queue.delete(id);
      else await deps.queue[verb](id);
    } catch (err) {
      if (err instanceof QueueCommandError) return render(res, session, 'Not done', '/console/queue', html`<div class="notice fail">${err.message}</div><p><a href="/console/message/${id}">Back to the message</a></p>`, err.status);
      throw err;
    }
    deps.logger.info({ event: `console.${verb}`, queueId: id }, `message ${verb} from the console`);
    return redirect(res, verb === 'delete' ? '/console/queue' : `/console/message/${id}?done=${verb}`);
  }
}

function doneText(done: string | null): string | null {
  const texts: Record<string, string> = {
    test: 'Test message queued; this page follows it until Graph has taken it.',
    retry: 'Retrying now.',
    hold: 'Held: it stays in the queue and is not delivered until released.',
    release: 'Released: it is delivered at once.',
  };
  return done ? (texts[done] ?? null) : null;
}

