/**
 * The console's pages, rendered on the server from plain data: overview, queue, one message,
 * failed, send a test message, recent events, login. Every form carries the session's CSRF token;
 * destructive actions go through a confirmation page.
 */
import type { Readiness } from '../ops/admin-server.js';
import type { QueueItem, QueueState } from '../ops/queue-control.js';
import { totalsOf, type LogRecord } from './activity.js';
import { lineChart } from './chart.js';
import { html, layout, type Markup } from './html.js';
import type { ActivitySeries, SeriesScope } from './shared-activity.js';

export interface TokenState {
  /** "graph" for the main section, else the route's tenant/app. */
  name: string;
  tenantId: string;
  clientId: string;
  ok: boolean;
  expiresAt: number | null;
  detail?: string;
}

export interface OverviewData {
  readiness: Readiness;
  tokens: TokenState[];
  depth: number;
  held: number;
  oldestReceivedAt: number | null;
  failed: number;
  activity: ActivitySeries;
  now: number;
}

export const PAGES = [
  ['/', 'Overview'],
  ['/console/queue', 'Queue'],
  ['/console/failed', 'Failed'],
  ['/console/test', 'Send a test message'],
  ['/console/events', 'Recent events'],
] as const;

export function nav(current: string, loggedIn: boolean, csrf: string | null): Markup {
  return html`<nav>${PAGES.map(([href, label]) => html`<a href="${href}"${href === current ? html` aria-current="page"` : ''}>${label}</a>`)}${
    loggedIn && csrf ? html`<form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="${csrf}"><button class="secondary" type="submit">Sign out</button></form>` : ''
  }</nav>`;
}

export function page(title: string, current: string, body: Markup, session: { csrf: string; loggedIn: boolean } | null): string {
  return layout(title, body, nav(current, session?.loggedIn ?? false, session?.csrf ?? null)).text;
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86_400).toFixed(1)} d`;
}

export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function card(label: string, value: unknown, cls = '', testId = ''): Markup {
  return html`<div class="card"${testId ? html` data-testid="${testId}"` : ''}><div class="n ${cls}">${value}</div><div class="l">${label}</div></div>`;
}

export function overview(data: OverviewData): Markup {
  const { readiness, activity, now } = data;
  const series = activity.series;
  const hour = totalsOf(series.slice(-60));
  const day = totalsOf(series);
  const failedChecks = Object.entries(readiness.checks).filter(([, c]) => !c.ok);
  return html`<h1>Overview</h1>
<div class="cards">
${card('health', 'alive', 'ok', 'health')}
${card('readiness', readiness.ready ? 'ready' : 'not ready', readiness.ready ? 'ok' : 'fail', 'readiness')}
${card('queue depth', data.depth, '', 'depth')}
${card('oldest message', data.oldestReceivedAt === null ? '-' : formatAge(now - data.oldestReceivedAt), '', 'oldest')}
${card('held', data.held)}
${card('in failed/', data.failed, data.failed > 0 ? 'warn' : '')}
</div>
${failedChecks.length > 0 ? html`<div class="notice fail" data-testid="not-ready"><strong>Not ready:</strong> ${failedChecks.map(([name, c]) => html`${name}: ${c.detail ?? 'failing'}. `)}</div>` : ''}
<h2>Tokens</h2>
<div class="table-wrap"><table><thead><tr><th>Tenant / app</th><th>State</th><th>Expires</th></tr></thead><tbody>
${data.tokens.map(
  (t) => html`<tr><td>${t.name}<br><span class="muted">${t.tenantId} / ${t.clientId}</span></td><td class="${t.ok ? 'ok' : 'fail'}">${t.ok ? 'valid' : `failing: ${t.detail ?? ''}`}</td><td>${
    t.expiresAt === null ? '-' : html`${formatTime(t.expiresAt)} <span class="muted">(in ${formatAge(t.expiresAt - now)})</span>`
  }</td></tr>`,
)}
</tbody></table></div>
<h2>Messages</h2>
<div class="table-wrap"><table data-testid="counts"><thead><tr><th></th><th>accepted</th><th>delivered</th><th>deferred</th><th>failed</th></tr></thead><tbody>
<tr data-window="hour"><th>last hour</th><td data-count="accepted">${hour.accepted}</td><td data-count="delivered">${hour.delivered}</td><td data-count="deferred">${hour.deferred}</td><td data-count="failed">${hour.failed}</td></tr>
<tr data-window="day"><th>last 24 h</th><td data-count="accepted">${day.accepted}</td><td data-count="delivered">${day.delivered}</td><td data-count="deferred">${day.deferred}</td><td data-count="failed">${day.failed}</td></tr>
</tbody></table></div>
<p class="muted" data-scope="${activity.scope}">${SCOPE_TEXT[activity.scope]}</p>
<h2>Last 24 hours</h2>
${lineChart('Messages per minute', [
  { label: 'accepted', color: '#0969da', values: series.map((b) => b.accepted) },
  { label: 'delivered', color: '#1a7f37', values: series.map((b) => b.delivered) },
], 'chart-messages')}
${lineChart('Queue depth', [{ label: 'depth', color: '#9a6700', values: series.map((b) => b.depth) }], 'chart-depth')}`;
}

const SCOPE_TEXT: Readonly<Record<SeriesScope, string>> = {
  node: 'Counted since the relay started (kept in memory, per minute, for 24 hours).',
  cluster: 'Counted by every relay sharing the queue (kept in PostgreSQL, per minute, for 24 hours; other relays\' figures arrive within seconds).',
  'node-fallback': "This relay's own figures since it started: the database's shared figures cannot be read right now.",
};

const STATES: ReadonlyArray<QueueState | ''> = ['', 'queued', 'active', 'deferred', 'held', 'failed'];

export function matches(item: QueueItem, query: string): boolean {
  if (!query) return true;
  const q = query.toLowerCase();
  const e = item.entry;
  return [item.id, e.envelope.mailFrom, ...e.envelope.rcptTo, e.messageId ?? ''].some((v) => v.toLowerCase().includes(q));
}

export function queuePage(items: QueueItem[], state: string, query: string, now: number): Markup {
  return html`<h1>Queue</h1>
<form class="filters" method="get" action="/console/queue">
<label for="state">State</label><select id="state" name="state">${STATES.map((s) => html`<option value="${s}"${s === state ? html` selected` : ''}>${s || 'all waiting'}</option>`)}</select>
<input type="search" name="q" value="${query}" placeholder="sender, recipient, queue ID or Message-ID" aria-label="Search">
<button class="secondary" type="submit">Show</button>
</form>
${items.length === 0 ? html`<p class="muted" data-testid="queue-empty">No messages${state ? html` in state ${state}` : ''}${query ? html` matching "${query}"` : ''}.</p>` : ''}
${items.length > 0 ? messageTable(items, now) : ''}`;
}

function messageTable(items: QueueItem[], now: number): Markup {
  return html`<div class="table-wrap"><table class="rows" data-testid="queue-table"><thead><tr><th>Queue ID</th><th>State</th><th>From</th><th>To</th><th class="hide-narrow">Mailbox</th><th class="hide-narrow">Attempts</th><th>Age</th><th>Last error</th></tr></thead><tbody>
${items.map(
  (i) => html`<tr data-id="${i.id}" data-state="${i.state}"><td class="id"><a href="/console/message/${i.id}">${i.id}</a></td><td data-label="state">${i.state}</td><td data-label="from">${i.entry.envelope.mailFrom || '<>'}</td><td data-label="to">${i.entry.envelope.rcptTo.join(', ')}</td><td class="hide-narrow">${i.entry.mailbox}</td><td class="hide-narrow">${i.entry.attempts}</td><td data-label="age">${formatAge(now - i.entry.receivedAt)}</td><td data-label="last error">${i.entry.lastError?.message ?? ''}</td></tr>`,
)}
</tbody></table></div>`;
}

function actionButton(id: string, action: string, label: string, csrf: string, cls = ''): Markup {
  return html`<form method="post" action="/console/message/${id}/${action}"><input type="hidden" name="csrf" value="${csrf}"><button type="submit" class="${cls}" data-action="${action}">${label}</button></form>`;
}

function attemptRows(events: LogRecord[]): Markup {
  const attempts = events.filter((e) => e.event === 'delivery.delivered' || e.event === 'delivery.deferred' || e.event === 'delivery.failed');
  if (attempts.length === 0) return html`<p class="muted">No attempts recorded since the relay started.</p>`;
  return html`<div class="table-wrap"><table class="rows" data-testid="attempts"><thead><tr><th>Time</th><th>Outcome</th><th>Graph status</th><th>Code</th><th>request-id</th><th>Reason</th></tr></thead><tbody>
${attempts.map(
  (e) => html`<tr><td data-label="time">${e.time ?? ''}</td><td data-label="outcome">${String(e.event).replace('delivery.', '')}</td><td data-label="Graph status">${e.status ?? (e.event === 'delivery.delivered' ? 202 : '')}</td><td data-label="code">${e.code ?? ''}</td><td data-label="request-id" class="id">${e.requestId ?? ''}</td><td data-label="reason">${e.reason ?? ''}</td></tr>`,
)}</tbody></table></div>`;
}

export function messagePage(id: string, item: QueueItem | null, events: LogRecord[], csrf: string, now: number, done: string | null): Markup {
  const delivered = events.find((e) => e.event === 'delivery.delivered');
  const accepted = events.find((e) => e.event === 'smtp.accepted');
  // Refresh by itself while the outcome is still open (a test message being sent).
  const open = item !== null && item.state !== 'failed' && item.state !== 'held';
  const refresh = open ? html`<meta http-equiv="refresh" content="2">` : '';
  const notice = done ? html`<div class="notice" data-testid="done">${done}</div>` : '';
  if (!item) {
    return html`${notice}<h1>Message <code>${id}</code></h1>${
      delivered
        ? html`<p class="ok" data-testid="outcome"><strong>Delivered</strong> at ${delivered.time ?? ''}: Graph accepted it (request-id <code>${delivered.requestId ?? '?'}</code>) after ${delivered.attempts ?? '?'} attempt(s).</p>`
        : html`<p class="muted" data-testid="outcome">Not in the queue or in failed/${accepted ? ' (deleted?)' : ''}.</p>`
    }${attemptRows(events)}`;
  }
  const e = item.entry;
  return html`${refresh}${notice}<h1>Message <code>${id}</code></h1>
<p data-testid="outcome">State: <strong data-testid="state">${item.state}</strong>${item.state === 'deferred' || item.state === 'queued' ? html`, next attempt ${formatTime(e.nextAttemptAt)} (in ${formatAge(e.nextAttemptAt - now)})` : ''}</p>
<div class="actions">
${item.state !== 'active' ? actionButton(id, 'retry', item.state === 'failed' ? 'Retry (back to the queue)' : 'Retry now', csrf) : ''}
${item.state === 'held' ? actionButton(id, 'release', 'Release', csrf) : item.state !== 'failed' && item.state !== 'active' ? actionButton(id, 'hold', 'Hold', csrf, 'secondary') : ''}
${item.state !== 'active' ? html`<a class="button secondary" href="/console/message/${id}/delete" data-action="delete">Delete...</a>` : ''}
</div>
<div class="table-wrap"><table><tbody>
<tr><th>Envelope from</th><td>${e.envelope.mailFrom || '<>'}</td></tr>
<tr><th>Envelope to</th><td>${e.envelope.rcptTo.join(', ')}</td></tr>
<tr><th>Sending mailbox</th><td>${e.mailbox}${e.graphProfile ? html` <span class="muted">(route's tenant/app ${e.graphProfile})</span>` : ''}</td></tr>
<tr><th>Route</th><td>${accepted?.route === undefined || accepted.route === null ? 'graph.mailbox (no route matched)' : `routes[${String(accepted.route)}]`}</td></tr>
<tr><th>Message-ID</th><td>${e.messageId ?? ''}</td></tr>
<tr><th>Client</th><td>${e.client.address} (${e.client.helo})${e.client.authUser ? ` as ${e.client.authUser}` : ''}</td></tr>
<tr><th>Size</th><td>${e.size} bytes</td></tr>
<tr><th>Received</th><td>${formatTime(e.receivedAt)} (${formatAge(now - e.receivedAt)} ago)</td></tr>
<tr><th>Attempts</th><td>${e.attempts}</td></tr>
${e.lastError ? html`<tr><th>Last error</th><td>${e.lastError.status ?? ''} ${e.lastError.code ?? ''} ${e.lastError.message}${e.lastError.requestId ? html` <span class="muted">request-id ${e.lastError.requestId}</span>` : ''}</td></tr>` : ''}
${e.failReason ? html`<tr><th>Failed because</th><td>${e.failReason}</td></tr>` : ''}
</tbody></table></div>
<h2>Attempts</h2>${attemptRows(events)}`;
}

export function confirmPage(title: string, question: string, action: string, csrf: string, cancelHref: string, fields: Record<string, string> = {}): Markup {
  return html`<h1>${title}</h1><p>${question}</p>
<form method="post" action="${action}" class="actions"><input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="confirm" value="yes">
${Object.entries(fields).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
<button type="submit" class="danger" data-action="confirm">Yes, ${title.toLowerCase()}</button> <a class="button secondary" href="${cancelHref}">Cancel</a></form>`;
}

export function failedPage(items: QueueItem[], bounceFor: (id: string) => string, now: number): Markup {
  return html`<h1>Failed</h1>
<p class="muted">Messages Graph refused for good, or that outlived delivery.maxQueueLifetime. Retry puts one back into the queue.</p>
${items.length === 0 ? html`<p class="muted">Nothing has failed.</p>` : html`<div class="table-wrap"><table class="rows" data-testid="failed-table"><thead><tr><th>Queue ID</th><th>From</th><th>To</th><th>Failed</th><th>Reason</th><th>Bounce</th></tr></thead><tbody>
${items.map(
  (i) => html`<tr data-id="${i.id}"><td class="id"><a href="/console/message/${i.id}">${i.id}</a></td><td data-label="from">${i.entry.envelope.mailFrom || '<>'}</td><td data-label="to">${i.entry.envelope.rcptTo.join(', ')}</td><td data-label="failed">${i.entry.failedAt ? `${formatAge(now - i.entry.failedAt)} ago` : ''}</td><td data-label="reason">${i.entry.failReason ?? ''}</td><td data-label="bounce">${bounceFor(i.id)}</td></tr>`,
)}</tbody></table></div>`}
<h2>Purge</h2>
<form method="get" action="/console/failed/purge" class="filters"><label for="older">Delete failed messages older than</label>
<select id="older" name="olderThan"><option value="7d">7 days</option><option value="1d">1 day</option><option value="1h">1 hour</option><option value="0s">any age</option></select>
<button type="submit" class="secondary">Purge...</button></form>`;
}

export function testPage(csrf: string, mailbox: string | undefined, error: string | null, to: string): Markup {
  return html`<h1>Send a test message</h1>
<p class="muted">Sent through the relay's own SMTP listener, like a device's message: it is queued, then delivered by Graph${mailbox ? html` from <code>${mailbox}</code>` : ''}. The next page follows it.</p>
${error ? html`<div class="notice fail" data-testid="test-error">${error}</div>` : ''}
<form method="post" action="/console/test" class="stack"><input type="hidden" name="csrf" value="${csrf}">
<label for="to">Recipient</label><input id="to" type="email" name="to" value="${to}" required placeholder="you@contoso.com">
<div class="actions"><button type="submit">Send</button></div></form>`;
}

const SHOWN_FIELDS = ['queueId', 'about', 'mailbox', 'from', 'recipients', 'status', 'code', 'requestId', 'reason', 'client', 'attempts'];

export function eventsPage(events: LogRecord[], query: string): Markup {
  return html`<h1>Recent events</h1>
<form class="filters" method="get" action="/console/events"><input type="search" name="q" value="${query}" placeholder="event, queue ID, mailbox..." aria-label="Filter"><button class="secondary" type="submit">Filter</button></form>
<p class="muted">The last ${events.length} lifecycle events (the relay's log lines; bodies and secrets are never logged), newest first.</p>
<div class="table-wrap"><table class="rows" data-testid="events"><thead><tr><th>Time</th><th>Level</th><th>Event</th><th>Details</th></tr></thead><tbody>
${events.map(
  (e) => html`<tr><td class="id">${(e.time ?? '').replace('T', ' ')}</td><td data-label="level" class="${e.level === 'error' || e.level === 'fatal' ? 'fail' : e.level === 'warn' ? 'warn' : ''}">${e.level ?? ''}</td><td><strong>${e.event}</strong></td><td>${e.msg ?? ''}${SHOWN_FIELDS.filter((k) => e[k] !== undefined && e[k] !== null).map(
    (k) => html` <span class="muted">${k}=</span>${k === 'queueId' || k === 'about' ? html`<a href="/console/message/${String(e[k])}">${String(e[k])}</a>` : String(e[k])}`,
  )}</td></tr>`,
)}</tbody></table></div>`;
}

export function loginPage(error: boolean): Markup {
  return html`<h1>Sign in</h1>
<p>This relay's admin listener has <code>admin.token</code> set: enter it to open the console.</p>
${error ? html`<div class="notice fail">That is not the admin token.</div>` : ''}
<form method="post" action="/console/login" class="stack"><label for="token">Admin token</label><input id="token" type="password" name="token" autocomplete="current-password" required>
<div class="actions"><button type="submit">Sign in</button></div></form>`;
}
