/**
 * The console on the admin listener, in a real browser: a delivered message shows in the overview
 * counts and chart, a deferred one in the queue list; hold and release through the page change the
 * queue; a form posted from another origin is refused; admin.token is the login. Screenshots of
 * every page at 1280 and 390 px go to test-output/screenshots/.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runPageTests, launchBrowser, overflowsHorizontally, screenshots, type TestBrowser } from '../helpers/browser.js';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { until } from '../helpers/wait.js';

let browser: TestBrowser;
let h: Harness | null = null;

beforeAll(async () => {
  if (runPageTests) browser = await launchBrowser();
}, 90_000);
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await h?.close();
  h = null;
  await browser?.context.clearCookies();
});

async function send(harness: Harness, testId: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: harness.port, secure: false, ignoreTLS: true });
  await transport.sendMail({ from: MAILBOX, to: `${testId}@contoso.example`, subject: testId, text: 'console test', headers: { 'X-Test-Id': testId } });
  transport.close();
}

/** A raw POST (no browser), to show what the server itself refuses. */
function post(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe.skipIf(!runPageTests)('console', () => {
  it('shows delivered mail in the overview, a deferred message in the queue, and holds and releases it', async () => {
    // Retries ten minutes apart: the deferred message stays deferred while the test looks at it.
    h = await startHarness({ config: { delivery: { retry: { minDelay: '10m', maxDelay: '1h' }, perMailbox: { messagesPerMinute: 0 } } } });
    const harness = h;
    const base = harness.relay.admin!.url;
    await send(harness, 'console-delivered');
    await waitForDelivery(harness.emulator, 'console-delivered');
    harness.emulator.faults.add({ route: 'sendMail', status: 503, code: 'ServiceUnavailable', message: 'try later', times: 1 });
    await send(harness, 'console-deferred');
    await until(async () => (await harness.relay.queue.list('deferred')).length === 1, 15_000);
    const [deferred] = await harness.relay.queue.list('deferred');
    const id = deferred!.id;

    const { page } = browser;
    await page.goto(`${base}/`);
    expect(await page.locator('[data-testid=readiness] .n').innerText()).toBe('ready');
    const hour = page.locator('tr[data-window=hour]');
    expect(await hour.locator('[data-count=delivered]').innerText()).toBe('1');
    expect(await hour.locator('[data-count=accepted]').innerText()).toBe('2');
    expect(await hour.locator('[data-count=deferred]').innerText()).toBe('1');
    expect(await page.locator('[data-testid=depth] .n').innerText()).toBe('1');
    // The chart's delivered line carries the delivery in the current minute.
    expect(await page.locator('[data-testid=chart-messages] path[data-series=delivered]').getAttribute('data-total')).toBe('1');
    expect(await page.locator('[data-testid=chart-messages] path[data-series=delivered]').getAttribute('d')).toMatch(/^M/);
    const cookies = await browser.context.cookies(base);
    const session = cookies.find((c) => c.name === 'sgr_session');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    await screenshots(page, 'console-overview');
    expect(await overflowsHorizontally(page)).toBe(false);

    await page.click('header nav a[href="/console/queue"]');
    const row = page.locator(`tr[data-id="${id}"]`);
    expect(await row.getAttribute('data-state')).toBe('deferred');
    expect(await row.innerText()).toContain('503');
    await screenshots(page, 'console-queue');
    expect(await overflowsHorizontally(page)).toBe(false);
    await page.fill('input[name=q]', 'console-deferred@contoso');
    await page.click('form.filters button');
    expect(await page.locator('[data-testid=queue-table] tbody tr').count()).toBe(1);
    await page.fill('input[name=q]', 'nobody-matches-this');
    await page.click('form.filters button');
    expect(await page.locator('[data-testid=queue-empty]').count()).toBe(1);

    await page.goto(`${base}/console/message/${id}`);
    expect(await page.locator('[data-testid=state]').innerText()).toBe('deferred');
    expect(await page.locator('[data-testid=attempts]').innerText()).toMatch(/503\s+ServiceUnavailable/);
    await page.click('button[data-action=hold]');
    await page.locator('[data-testid=done]').waitFor();
    expect(await page.locator('[data-testid=state]').innerText()).toBe('held');
    expect((await harness.relay.queue.show(id)).state).toBe('held');
    await screenshots(page, 'console-message-held');

    // A form on another origin, even one that knows the CSRF token, cannot act on the console.
    const csrf = await page.locator('form[action$="/release"] input[name=csrf]').getAttribute('value');
    const evil: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<form method="post" action="${base}/console/message/${id}/release"><input name="csrf" value="${csrf}"><button id="go">go</button></form>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const other = await browser.context.newPage();
      await other.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
      const [response] = await Promise.all([other.waitForResponse(`${base}/console/message/${id}/release`), other.click('#go')]);
      expect(response.status()).toBe(403);
      await other.close();
    } finally {
      // Chromium keeps the connection alive; close it too, or close() waits for its timeout.
      evil.closeAllConnections();
      await new Promise((r) => evil.close(r));
    }
    const raw = await post(`${base}/console/message/${id}/release`, `csrf=${encodeURIComponent(csrf ?? '')}`, { origin: 'http://evil.example', cookie: `sgr_session=${session?.value ?? ''}` });
    expect(raw.status).toBe(403);
    expect(raw.text).toContain('cross-origin request refused');
    // Same origin and session, but no CSRF token: refused too.
    const noToken = await post(`${base}/console/message/${id}/release`, '', { origin: base, cookie: `sgr_session=${session?.value ?? ''}` });
    expect(noToken.status).toBe(403);
    expect((await harness.relay.queue.show(id)).state).toBe('held');

    await page.click('button[data-action=release]');
    await waitForDelivery(harness.emulator, 'console-deferred');
    await until(async () => (await harness.relay.queue.list()).length === 0, 10_000);
    await page.goto(`${base}/console/message/${id}`);
    expect(await page.locator('[data-testid=outcome]').innerText()).toContain('Delivered');

    await page.goto(`${base}/console/test`);
    await page.fill('input[name=to]', 'it@contoso.example');
    await page.click('form.stack button[type=submit]');
    await page.locator('[data-testid=done]').waitFor();
    const testId = /\/console\/message\/([0-9A-Z]{19})/.exec(page.url())?.[1] ?? '';
    expect(testId).toMatch(/^[0-9A-Z]{19}$/);
    // The page refreshes itself until the outcome is known.
    await until(async () => (await page.locator('[data-testid=outcome]').innerText().catch(() => '')).includes('Delivered'), 20_000);
    await screenshots(page, 'console-test-delivered');
    await page.goto(`${base}/console/test`);
    await screenshots(page, 'console-test');
    await page.goto(`${base}/console/events`);
    expect(await page.locator('[data-testid=events]').innerText()).toContain('delivery.deferred');
    expect(await page.locator('[data-testid=events]').innerText()).not.toContain('test-secret-value');
    await screenshots(page, 'console-events');
    await page.goto(`${base}/console/failed`);
    await screenshots(page, 'console-failed');
  }, 180_000);

  it('lists failed messages with their reason, and purges them after confirmation', async () => {
    h = await startHarness({ config: { bounces: { enabled: false } } });
    const harness = h;
    harness.emulator.faults.add({ route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
    await send(harness, 'console-failed');
    await until(async () => (await harness.relay.queue.list('failed')).length === 1, 15_000);
    const { page } = browser;
    const base = harness.relay.admin!.url;
    await page.goto(`${base}/console/failed`);
    expect(await page.locator('[data-testid=failed-table]').innerText()).toContain('ErrorInvalidRecipients');
    await screenshots(page, 'console-failed');
    await page.selectOption('select[name=olderThan]', '0s');
    await page.click('form.filters button');
    await screenshots(page, 'console-purge-confirm');
    await page.click('button[data-action=confirm]');
    await page.waitForURL(`${base}/console/failed`);
    expect(await harness.relay.queue.list('failed')).toEqual([]);
  }, 120_000);

  it('asks for admin.token before showing anything when it is set', async () => {
    h = await startHarness({ config: { admin: { listen: '127.0.0.1:0', token: 'console-admin-token-0123456789' } } });
    const base = h.relay.admin!.url;
    const { page } = browser;
    await page.goto(`${base}/`);
    expect(new URL(page.url()).pathname).toBe('/console/login');
    await screenshots(page, 'console-login');
    await page.fill('input[name=token]', 'wrong-token-wrong-token');
    await page.click('form.stack button');
    expect(await page.innerText('main')).toContain('not the admin token');
    await page.fill('input[name=token]', 'console-admin-token-0123456789');
    await page.click('form.stack button');
    await page.locator('[data-testid=readiness]').waitFor();
    // The JSON API still wants the token as a Bearer header, cookie or not.
    const api = await page.request.get(`${base}/queue`);
    expect(api.status()).toBe(401);
  }, 120_000);
});
