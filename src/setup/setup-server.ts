/**
 * The page `smtp-graph-relay setup` serves on 127.0.0.1 (a random port): reachable only from this
 * machine, opened once with the one-time token in the printed address, which becomes a session
 * cookie; every form carries the session's CSRF token; Host and Origin are checked as on the admin
 * listener (page-guard.ts). Save and Test streams each stage's result into the page as it finishes,
 * so the page needs no script.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { html, layout, PAGE_END, PAGE_HEADERS, pageStart, STYLESHEET } from '../console/html.js';
import { refusePage } from '../console/page-guard.js';
import { FormTooLargeError, randomToken, readForm, sameSecret, Sessions, validCsrf } from '../console/session.js';
import { readExisting } from './config-file.js';
import { prefill, type FormSubmission } from './fields.js';
import { saveAndTest } from './save-and-test.js';
import { eventItem, METHOD_CSS, setupForm } from './setup-page.js';

export interface SetupServerOptions {
  configFile: string;
  /** Extra CAs for the test (the emulator's in tests, when the file does not name one). */
  extraCaPem?: string[];
  runningAsRoot?: boolean;
}

export interface RunningSetup {
  /** The address to open, with the one-time token. */
  url: string;
  /** Resolves when Save and Test has written the configuration. */
  saved: Promise<string>;
  close(): Promise<void>;
}

// Certificates and keys are a few kB; 1 MiB leaves room without inviting a memory exhaustion.
const MAX_FORM_BYTES = 1024 * 1024;
const SESSION_TTL_MS = 60 * 60_000;

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...PAGE_HEADERS, 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

export async function startSetupServer(options: SetupServerOptions): Promise<RunningSetup> {
  let oneTimeToken: string | null = randomToken();
  const sessions = new Sessions(SESSION_TTL_MS, Date.now);
  let running = false;
  let markSaved: (file: string) => void = () => undefined;
  const saved = new Promise<string>((resolve) => (markSaved = resolve));
  const configFile = path.resolve(options.configFile);
  // Files uploaded in an attempt that failed: the re-shown form cannot carry them (a browser never
  // refills a file input), so the next attempt reuses them unless new ones are chosen. In memory
  // only, like the secrets typed into the form; forgotten once saved.
  let keptFiles: Record<string, Buffer> = {};

  const formPage = async (csrf: string, values?: Record<string, string>) => {
    const existing = await readExisting(configFile);
    const shown = values ?? prefill(existing.data, configFile, options.runningAsRoot ?? false);
    return layout('Setup', html`<h1>Connect the relay to Microsoft 365</h1>${setupForm(shown, csrf, configFile, existing.doc !== null)}`);
  };

  const route = async (req: IncomingMessage, res: ServerResponse) => {
    if (refusePage(req, res, '127.0.0.1')) return;
    const url = new URL(req.url ?? '/', 'http://setup');
    if (req.method === 'GET' && url.pathname === '/assets/style.css') {
      return send(res, 200, STYLESHEET + METHOD_CSS, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=300' });
    }
    const offered = url.searchParams.get('token');
    if (req.method === 'GET' && url.pathname === '/' && offered !== null) {
      if (oneTimeToken === null || !sameSecret(offered, oneTimeToken)) {
        return send(res, 403, layout('Setup', html`<p class="notice fail">This address has been used already or is wrong. Run <code>smtp-graph-relay setup</code> again for a new one.</p>`).text);
      }
      oneTimeToken = null;
      const session = sessions.create();
      // The token leaves the address bar at once (history, screenshots); the cookie carries the session.
      res.writeHead(303, { location: '/', 'set-cookie': sessions.cookie(session), 'cache-control': 'no-store' });
      return void res.end();
    }
    const session = sessions.find(req);
    if (!session) {
      return send(res, 403, layout('Setup', html`<p class="notice fail">Open the address that <code>smtp-graph-relay setup</code> printed (it works once, in one browser).</p>`).text);
    }
    if (req.method === 'GET' && url.pathname === '/') return send(res, 200, (await formPage(session.csrf)).text);
    if (req.method === 'POST' && url.pathname === '/save') {
      let form: FormData;
      try {
        form = await readForm(req, MAX_FORM_BYTES);
      } catch (err) {
        if (err instanceof FormTooLargeError) return send(res, 413, layout('Setup', html`<p class="notice fail">The form is larger than 1 MiB; upload only the certificate and its key.</p>`).text);
        throw err;
      }
      if (!validCsrf(session, form)) return send(res, 403, layout('Setup', html`<p class="notice fail">The form has expired; reload the page and submit again.</p>`).text);
      if (running) return send(res, 409, layout('Setup', html`<p class="notice fail">A test is already running in another tab; wait for it to finish.</p>`).text);
      running = true;
      try {
        const submission = await submissionOf(form);
        await saveAndTestPage(res, { values: submission.values, files: { ...keptFiles, ...submission.files } }, session.csrf);
      } finally {
        running = false;
      }
      return;
    }
    send(res, 404, layout('Not found', html`<p>Not found. <a href="/">Back to setup</a></p>`).text);
  };

  const saveAndTestPage = async (res: ServerResponse, submission: FormSubmission, csrf: string) => {
    res.writeHead(200, PAGE_HEADERS);
    // Browsers start rendering a streamed page after roughly the first kilobyte; the padding makes
    // the first stage appear as soon as it finishes rather than with the last one.
    res.write(`${pageStart('Save and Test').text}<h1>Save and Test</h1><ol class="steps" id="steps">\n<!--${' '.repeat(1024)}-->\n`);
    let ok = false;
    try {
      ok = await saveAndTest({ configFile, submission, ...(options.extraCaPem ? { extraCaPem: options.extraCaPem } : {}) }, (event) => res.write(eventItem(event).text));
    } catch (err) {
      res.write(html`<li class="fail"><span class="tag fail">failed</span>${(err as Error).message}</li>`.text);
    }
    res.write('</ol>');
    keptFiles = ok ? {} : { ...submission.files };
    if (ok) {
      res.write(html`<p class="muted">Setup has finished; you can close this page.</p>`.text);
    } else {
      const values = { ...submission.values };
      const kept = new Set(Object.keys(keptFiles));
      res.write(html`<div class="notice fail" id="not-saved">Nothing was saved. Correct the form below and press Save and Test again.</div>${setupForm(values, csrf, configFile, (await readExisting(configFile)).doc !== null, kept)}`.text);
    }
    res.end(PAGE_END.text);
    if (ok) markSaved(configFile);
  };

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, layout('Error', html`<p class="notice fail">${(err as Error).message}</p>`).text);
      else res.end();
    });
  });
  const token = oneTimeToken;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Loopback only, port chosen by the system: the page holds secrets while it is open.
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/?token=${token}`,
    saved,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function submissionOf(form: FormData): Promise<FormSubmission> {
  const values: Record<string, string> = {};
  const files: Record<string, Buffer> = {};
  for (const [key, value] of form.entries()) {
    if (key === 'csrf') continue;
    if (typeof value === 'string') values[key] = value;
    else if (value.size > 0) files[key] = Buffer.from(await value.arrayBuffer());
  }
  return { values, files };
}
