/**
 * The console wired to a running relay: the activity record fed from the logger, the queue depth
 * sampled once a minute for the chart, token states per tenant/app, and the test-message sender.
 * app.ts creates one and passes its handler to the admin listener.
 */
import type { Logger } from '../log.js';
import type { ObservedTokenProvider } from '../graph/observed-token-provider.js';
import type { Readiness } from '../ops/admin-server.js';
import type { QueueControl } from '../ops/queue-control.js';
import type { ActivityStore } from '../spool/spool.js';
import { Activity, MINUTE_MS, PendingCounts, tapLogLines } from './activity.js';
import { createConsole, type ConsoleHandler } from './console-server.js';
import type { TokenState } from './pages.js';
import { SharedActivity, type ActivitySeries } from './shared-activity.js';
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
  /** The shared per-minute record where several relays share the spool (PostgreSQL): the figures become the cluster's. */
  activityStore?: ActivityStore | undefined;
}

export interface RelayConsole {
  handler: ConsoleHandler;
  activity: Activity;
  /** Stores this node's last counts in the shared record (before the spool closes); nothing without one. */
  flushShared(): Promise<void>;
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
  const activity = new Activity(deps.now, deps.activityStore ? new PendingCounts() : null);
  const shared = deps.activityStore
    ? new SharedActivity(deps.activityStore, activity as Activity & { pending: PendingCounts }, (err) =>
        deps.logger.warn({ event: 'console.activity_store_failed', err: err.message }, 'could not store the console figures in the database; kept and retried'),
      )
    : null;
  shared?.start();
  const series = (): Promise<ActivitySeries> => (shared ? shared.read() : Promise.resolve({ series: activity.series(), scope: 'node' }));
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
    series,
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
    flushShared: async () => {
      await shared?.stop();
    },
    close() {
      clearInterval(timer);
      shared?.halt();
      untap();
    },
  };
}
