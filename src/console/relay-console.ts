/**
 * The console wired to a running relay: the activity record fed from the logger, the queue depth
 * sampled once a minute for the chart, token states per tenant/app, and the test-message sender.
 * app.ts creates one and passes its handler to the admin listener.
 */
import type { Logger } from '../log.js';
import type { ObservedTokenProvider } from '../graph/observed-token-provider.js';
import type { Readiness } from '../ops/admin-server.js';
import type { QueueControl } from '../ops/queue-control.js';
import { Activity, MINUTE_MS, tapLogLines } from './activity.js';
import { createConsole, type ConsoleHandler } from './console-server.js';
import type { TokenState } from './pages.js';
import { sendTestMessage } from './test-message.js';

export interface TokenSource {
  name: string;
  tenantId: string;
  clientId: string;
  provider: ObservedTokenProvider;
}

export interface RelayConsoleDeps {
  logger: Logger;
  now: () => number;
  queue: QueueControl;
  readiness: () => Promise<Readiness>;
  snapshot: () => { depth: number; held: number; oldestReceivedAt: number | null };
  /** Read at each page: a reload can change credentials and routes. */
  tokenSources: () => TokenSource[];
  smtpAddress: () => { host: string; port: number } | undefined;
  mailbox: () => string | undefined;
  listenHost: string;
  token?: string | undefined;
}

export interface RelayConsole {
  handler: ConsoleHandler;
  activity: Activity;
  close(): void;
}

/** The `exp` claim of a JWT access token, in ms; null when the token is not a readable JWT. */
export function tokenExpiry(token: string): number | null {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

async function tokenState(source: TokenSource): Promise<TokenState> {
  const base = { name: source.name, tenantId: source.tenantId, clientId: source.clientId };
  try {
    // MSAL answers from its cache while the token is fresh: no request to Entra per page view.
    const token = await source.provider.getToken();
    return { ...base, ok: true, expiresAt: tokenExpiry(token) };
  } catch {
    const error = source.provider.health.lastError;
    return { ...base, ok: false, expiresAt: null, detail: error ? `${error.code} ${error.message}` : 'no token' };
  }
}

export function createRelayConsole(deps: RelayConsoleDeps): RelayConsole {
  const activity = new Activity(deps.now);
  const untap = tapLogLines(deps.logger, (line) => activity.recordLine(line));
  const sample = () => activity.sampleDepth(deps.snapshot().depth);
  sample();
  const timer = setInterval(sample, MINUTE_MS);
  timer.unref();
  const handler = createConsole({
    queue: deps.queue,
    readiness: deps.readiness,
    tokenStates: () => Promise.all(deps.tokenSources().map(tokenState)),
    snapshot: deps.snapshot,
    activity,
    now: deps.now,
    listenHost: deps.listenHost,
    token: deps.token,
    get mailbox() {
      return deps.mailbox();
    },
    sendTest: async (to) => {
      const smtp = deps.smtpAddress();
      const from = deps.mailbox();
      if (!smtp) return { error: 'the relay has no SMTP listener' };
      if (!from) return { error: 'graph.mailbox is not set: there is no default mailbox to send the test from' };
      return sendTestMessage(smtp, from, to);
    },
    logger: deps.logger,
  });
  return {
    handler,
    activity,
    close() {
      clearInterval(timer);
      untap();
    },
  };
}
