/**
 * Composition root: the one place where concrete classes are chosen and wired together.
 */
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { queueBounce } from './delivery/bounces.js';
import type { SpoolEntry } from './spool/entry.js';
import { graphProfileKey } from './smtp/routing.js';
import { resolveGraphHosts, type RelayConfig } from './config/schema.js';
import { attemptDelivery } from './delivery/attempt.js';
import { createHttpTransport, type HttpTransport } from './graph/http-transport.js';
import { SINGLE_REQUEST_LIMIT } from './graph/large-message.js';
import { DraftCleanup } from './delivery/draft-cleanup.js';
import { FileDraftStore } from './delivery/draft-file-store.js';
import { UploadBudgets } from './delivery/upload-budget.js';
import path from 'node:path';
import { HttpGraphMailer, type GraphMailer } from './graph/mailer.js';
import { createMsalTokenProvider, type MsalSettings } from './graph/msal-token-provider.js';
import type { TokenProvider } from './graph/token-provider.js';
import type { Logger } from './log.js';
import { startSmtp, type RunningSmtp } from './smtp/server.js';
import { openSpool } from './spool/open-spool.js';
import { ClaimLoop } from './delivery/claim-loop.js';
import { createDispatcher, nodeName, type Dispatcher } from './delivery/dispatcher.js';
import type { Spool } from './spool/spool.js';
import { systemClock, type Clock } from './util/clock.js';
import { parseHostPort } from './config/units.js';
import { openRelayProblem, smtpListeners } from './config/exposure.js';
import { ConfigError } from './config/load.js';
import { ObservedTokenProvider } from './graph/observed-token-provider.js';
import { startAdmin, type Readiness, type RunningAdmin } from './ops/admin-server.js';
import { RelayMetrics } from './ops/metrics.js';
import { measuredMailer } from './ops/measured-mailer.js';
import { QueueControl } from './ops/queue-control.js';
import { createRelayConsole, type RelayConsole } from './console/relay-console.js';

export interface RelayOptions {
  config: RelayConfig;
  logger: Logger;
  clock?: Clock;
  /** Extra CAs trusted for Graph and the authority (demo mode passes the emulator's). */
  extraCaPem?: string[];
  /** Replace the spool (tests force write failures through it). */
  spool?: Spool;
}

export interface RunningRelay {
  smtp: RunningSmtp;
  scheduler: Dispatcher;
  spool: Spool;
  drafts: DraftCleanup;
  tokens: ObservedTokenProvider;
  metrics: RelayMetrics;
  queue: QueueControl;
  admin: RunningAdmin | null;
  readiness(): Promise<Readiness>;
  /** Applies a new configuration where that is safe; returns what changed and what needs a restart. */
  reload(next: RelayConfig): Promise<{ applied: string[]; needsRestart: string[] }>;
  /** Graceful stop: refuse new mail, let attempts in flight finish within deadlineMs, keep the rest spooled. */
  stop(deadlineMs?: number): Promise<void>;
}

/** The HTTP stack for the authority and Graph, with the configured CAs and proxy. */
export async function createGraphTransport(config: RelayConfig, extraCaPem: string[] = []): Promise<HttpTransport> {
  const cas = [...extraCaPem];
  if (config.graph.caFile) cas.push(await readFile(config.graph.caFile, 'utf8'));
  return createHttpTransport({ extraCaPem: cas, timeoutMs: config.graph.requestTimeout, ...(config.graph.proxy ? { proxy: config.graph.proxy } : {}) });
}

export function msalSettings(config: RelayConfig, http: HttpTransport): MsalSettings {
  const { tenantId, clientId, authorityHost, endpoint, auth } = config.graph;
  return { tenantId, clientId, authorityHost, endpoint, auth, http, largeMessages: config.smtp.maxMessageSize > SINGLE_REQUEST_LIMIT };
}

export async function createGraphClients(config: RelayConfig, extraCaPem: string[] = []): Promise<{ http: HttpTransport; tokens: TokenProvider; mailer: HttpGraphMailer }> {
  const http = await createGraphTransport(config, extraCaPem);
  const tokens = await createMsalTokenProvider(msalSettings(config, http));
  return { http, tokens, mailer: new HttpGraphMailer(config.graph.endpoint, http) };
}

function smtpSettings(config: RelayConfig) {
  return {
    listen: config.smtp.listen,
    ...(config.smtp.hostname ? { hostname: config.smtp.hostname } : {}),
    maxMessageSize: config.smtp.maxMessageSize,
    maxRecipients: config.smtp.maxRecipients,
    maxConnections: config.smtp.maxConnections,
    socketTimeoutMs: config.smtp.socketTimeout,
    ...(config.graph.mailbox ? { defaultMailbox: config.graph.mailbox } : {}),
    routes: config.routes,
    headerOnlyRecipients: config.delivery.headerOnlyRecipients,
    ...(config.smtp.allowedClients ? { allowedClients: config.smtp.allowedClients } : {}),
    messagesPerMinutePerClient: config.smtp.messagesPerMinutePerClient,
    maxSessionMs: config.smtp.maxSessionDuration,
    ...(config.smtp.tls ? { tls: config.smtp.tls } : {}),
    auth: {
      required: config.smtp.auth.required,
      allowInsecure: config.smtp.auth.allowInsecure,
      users: config.smtp.auth.users,
      maxFailures: config.smtp.auth.maxFailures,
      failureWindowMs: config.smtp.auth.failureWindow,
    },
  };
}

function schedulerOptions(config: RelayConfig) {
  return {
    maxInFlightPerMailbox: config.delivery.maxInFlightPerMailbox,
    backoff: { minMs: config.delivery.retry.minDelay, maxMs: config.delivery.retry.maxDelay },
    maxQueueLifetimeMs: config.delivery.maxQueueLifetime,
    messagesPerMinute: config.delivery.perMailbox.messagesPerMinute,
    recipientsPerDay: config.delivery.perMailbox.recipientsPerDay,
  };
}

/** Dotted paths whose values differ between two configs (leaves only). */
export function changedPaths(a: unknown, b: unknown, prefix = ''): string[] {
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => changedPaths((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
}

async function closeProfiles(profiles: ReadonlyMap<string, { close: () => Promise<void> }>): Promise<void> {
  await Promise.all([...profiles.values()].map((p) => p.close().catch(() => undefined)));
}

/** Throws unless the key and certificate files read and form a TLS context (checked before a reload applies anything). */
async function assertTlsLoadable(tlsFiles: { certFile: string; keyFile: string }): Promise<void> {
  const [key, cert] = await Promise.all([readFile(tlsFiles.keyFile), readFile(tlsFiles.certFile)]);
  createSecureContext({ key, cert });
}

/** Settings that are bound at start (sockets, the spool directory): a reload reports them instead. */
const RESTART_ONLY = [/^smtp\.listen/, /^smtp\.tls\.implicitListen/, /^spool\./, /^admin\./];

export async function startRelay(options: RelayOptions): Promise<RunningRelay> {
  const { config, logger } = options;
  const clock = options.clock ?? systemClock;
  const spool = options.spool ?? (await openSpool(config, logger, () => clock.now()));
  const recovery = await spool.recover();
  logger.info(
    {
      event: 'spool.recovered',
      dir: config.spool.dir,
      queued: recovery.queued.length,
      discardedPartial: recovery.discardedPartial,
      quarantined: recovery.quarantined.length,
      completedMoves: recovery.completedMoves,
      replayedFromJournal: recovery.replayed,
    },
    'spool recovered',
  );
  // Everything in corrupt/ needs a person: a damaged journal segment means acknowledged mail lost.
  for (const q of recovery.quarantined) logger.error({ event: 'spool.quarantined', queueId: q.id, area: q.area, reason: q.reason, operatorActionRequired: true }, 'spool entry moved to corrupt/');

  // One Graph client per tenant/app: the default one, and one for each route with its own graph settings.
  const buildRouteProfiles = async (cfg: RelayConfig) => {
    const map = new Map<string, { tokens: ObservedTokenProvider; mailer: GraphMailer; close: () => Promise<void> }>();
    try {
      for (const route of cfg.routes) {
        if (!route.graph || map.has(graphProfileKey(route.graph))) continue;
        const { cloud, authorityHost, endpoint, ...identity } = route.graph;
        const routeGraph = { ...cfg.graph, ...identity, ...resolveGraphHosts({ cloud, authorityHost, endpoint }, cfg.graph) };
        const clients = await createGraphClients({ ...cfg, graph: routeGraph }, options.extraCaPem);
        map.set(graphProfileKey(route.graph), { tokens: observe(clients.tokens), mailer: measuredMailer(metrics, () => clients.mailer), close: () => clients.http.close() });
      }
    } catch (err) {
      // One route's credentials failed (a certificate file missing): none of this set is used.
      await closeProfiles(map);
      throw err;
    }
    return map;
  };
  let graph = await createGraphClients(config, options.extraCaPem);
  // The configuration in force (replaced by reload); read where a later reload must be seen.
  let current = config;
  // Declared before the scheduler exists: metrics read it lazily at scrape time.
  let scheduler: Dispatcher;
  const metrics = new RelayMetrics(() => {
    const snap = scheduler.snapshot();
    return {
      depth: snap.depth,
      oldestAgeSeconds: snap.oldestReceivedAt === null ? 0 : Math.max(0, (clock.now() - snap.oldestReceivedAt) / 1000),
      held: snap.held,
      inFlightByMailbox: snap.inFlightByMailbox,
    };
  }, () => spool.count('failed'));
  for (const q of recovery.quarantined) metrics.quarantined.inc({ area: q.area ?? 'unknown' });
  // In a cluster every node's counters carry its name (queue depth and age are the cluster's).
  if (config.spool.backend === 'postgres') metrics.registry.setDefaultLabels({ node: nodeName() });
  const observe = (inner: TokenProvider) => new ObservedTokenProvider(inner, clock.now, (ok) => metrics.tokenAcquisitions.inc({ result: ok ? 'ok' : 'error' }));
  let tokens = observe(graph.tokens);
  let routeProfiles = await buildRouteProfiles(config);
  // The default client is read at each call, so a reload's new credentials apply to the next send.
  const mailer = measuredMailer(metrics, () => graph.mailer);
  const profileFor = (graphProfile: string | undefined) => (graphProfile ? routeProfiles.get(graphProfile) : { tokens, mailer });
  const uploadBudgets = new UploadBudgets(clock.now);
  scheduler = createDispatcher(
    schedulerOptions(config),
    {
      ...(spool.clusterStats ? { clusterStats: () => (spool.clusterStats as NonNullable<Spool['clusterStats']>)() } : {}),
      spool,
      clock,
      logger,
      // tokens and graph are read at each attempt, so a reload swaps credentials for the next one.
      attempt: async (entry, promoted) => {
        const profile = profileFor(entry.graphProfile);
        if (!profile) {
          return { decision: { action: 'retry', kind: 'operator', reason: `no Graph credentials for ${entry.graphProfile} any more (routes changed?): restore that route's graph settings`, retryAfterMs: null, pauseMailbox: false } };
        }
        return attemptDelivery(entry, {
          tokens: profile.tokens,
          mailer: profile.mailer,
          spool,
          now: clock.now,
          pausedUntil: (m) => scheduler.pausedUntil(m),
          ...(scheduler instanceof ClaimLoop && scheduler.readsPauseFirst(promoted !== undefined) ? { refreshPause: (m: string) => (scheduler as ClaimLoop).refreshPause(m) } : {}),
          drafts: (e) => drafts.trackerFor(e.id, e.mailbox, e.graphProfile),
          pacer: (e) => uploadBudgets.for(e.graphProfile ?? '', e.mailbox),
          delegated: profile.tokens.delegated === true,
          ...(promoted?.content ? { prefetched: promoted.content } : {}),
          ...(promoted?.leaving ? { leaving: promoted.leaving } : {}),
        });
      },
      onSettled: (entry, result, outcome) => {
        if (outcome === 'delivered') metrics.delivered.inc({ mailbox: entry.mailbox });
        else if (outcome === 'deferred' && result.decision.action === 'retry') metrics.deferred.inc({ kind: result.decision.kind, status: String(result.status ?? 'none') });
        else if (outcome === 'failed' || outcome === 'expired') {
          metrics.failed.inc({ reason: outcome === 'failed' ? 'permanent' : 'expired' });
          void queueBounce(bounceDeps, entry.id, outcome === 'expired');
        }
      },
    },
    config.spool.backend === 'postgres' ? { leaseMs: config.spool.postgres.leaseTimeout } : null,
  );
  // Drafts the large path gave up, deleted when their mailbox may be called (recorded beside the
  // spool, or in the shared database where another relay takes them over if this one stops).
  const draftStore = spool.draftStore && config.spool.backend === 'postgres' ? spool.draftStore(nodeName(), config.spool.postgres.leaseTimeout, () => current.delivery.maxInFlightPerMailbox) : new FileDraftStore(path.join(config.spool.dir, 'graph-drafts.json'), logger);
  const drafts = await DraftCleanup.open(draftStore, {
    clock,
    logger,
    mailboxes: scheduler,
    backoff: { minMs: config.delivery.retry.minDelay, maxMs: config.delivery.retry.maxDelay },
    deleteDraft: async (record, mayStart) => {
      const profile = profileFor(record.graphProfile);
      if (!profile) return { kind: 'network', message: `no Graph credentials for ${record.graphProfile} any more` };
      return profile.mailer.deleteDraft(record.mailbox, record.draftId, await profile.tokens.getToken(), mayStart);
    },
  });
  for (const entry of recovery.queued) scheduler.enqueue(entry);
  scheduler.start();
  drafts.start();

  const bounceDeps = {
    spool,
    clock,
    logger,
    settings: () => ({ ...current.bounces, hostname: current.smtp.hostname }),
    enqueue: (entry: SpoolEntry) => scheduler.enqueue(entry),
  };
  const queue = new QueueControl(spool, scheduler, clock, drafts);

  const smtp = await startSmtp(
    smtpSettings(config),
    {
      spool,
      logger,
      clock,
      onQueued: (entry) => {
        metrics.received.inc({ result: 'queued' });
        scheduler.enqueue(entry);
      },
      onRefused: (code) => metrics.refused.inc({ reason: String(code) }),
      mailboxLoad: (mailbox) => scheduler.queuedFor(mailbox),
    },
  );

  // Ready = the spool takes writes and a token can be had.
  const readiness = async (): Promise<Readiness> => {
    const checks: Readiness['checks'] = {};
    try {
      await spool.probeWritable();
      checks.spool = { ok: true };
    } catch (err) {
      checks.spool = { ok: false, detail: `spool not writable: ${(err as Error).message}` };
    }
    // MSAL answers from its cache while the token is fresh, so this only reaches the token endpoint
    // when the relay itself would have to. After "login required", a cached token proves nothing
    // (Graph already refused it): only a real refresh can clear that state.
    try {
      await tokens.getToken({ forceRefresh: tokens.health.loginRequired });
      checks.token = { ok: true };
    } catch {
      const h = tokens.health;
      checks.token = { ok: false, detail: h.loginRequired ? 'login required: run `smtp-graph-relay login`' : `${h.lastError?.code ?? ''} ${h.lastError?.message ?? ''}`.trim() };
    }
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  };

  let admin: RunningAdmin | null = null;
  let relayConsole: RelayConsole | null = null;
  if (config.admin.listen !== false) {
    const { host, port } = parseHostPort(config.admin.listen) as { host: string; port: number };
    relayConsole = createRelayConsole({
      logger,
      now: clock.now,
      queue,
      readiness,
      snapshot: () => scheduler.snapshot(),
      tokenSources: () => [
        { name: 'graph', tenantId: current.graph.tenantId, clientId: current.graph.clientId, provider: tokens },
        ...[...routeProfiles].map(([key, p]) => ({ name: 'route', tenantId: key.split('|')[0] ?? '', clientId: key.split('|')[1] ?? '', provider: p.tokens })),
      ],
      smtpAddress: () => smtp.addresses[0],
      mailbox: () => current.graph.mailbox,
      listenHost: host,
      token: config.admin.token,
      // On the PostgreSQL spool the overview's per-minute figures are the cluster's.
      activityStore: spool.activityStore?.(nodeName()),
    });
    try {
      admin = await startAdmin(host, port, { metrics, queue, readiness, logger, token: config.admin.token, console: relayConsole.handler });
    } catch (err) {
      // Say which listener failed: main.ts names admin.listen / --admin-listen, not the SMTP options.
      relayConsole.close();
      await Promise.allSettled([scheduler.stop(0), drafts.stop(), smtp.close()]);
      await spool.close();
      throw Object.assign(err as Error, { listener: 'admin' });
    }
  }
  logger.info(
    {
      event: 'relay.started',
      listen: smtp.addresses.map((a) => `${a.host}:${a.port}`),
      admin: admin?.url ?? null,
      mailbox: config.graph.mailbox,
      auth: tokens.description,
      endpoint: config.graph.endpoint,
      pid: process.pid,
    },
    'relay started',
  );

  // What is bound now, whatever later reloads say (listen addresses change only with a restart).
  const boundListeners = smtpListeners(config.smtp);
  let stopping: Promise<void> | null = null;
  return {
    smtp,
    scheduler,
    spool,
    drafts,
    get tokens() {
      return tokens;
    },
    metrics,
    queue,
    admin,
    readiness,
    async reload(next) {
      // The listeners stay bound until a restart: the new policy must hold for them, not only for
      // the listen addresses in the new file (a file on 127.0.0.1 that drops allowedClients would
      // otherwise open the running 0.0.0.0 listener).
      const refused = (err: unknown): never => {
        logger.error({ event: 'config.reload_refused', err: (err as Error).message }, 'reload refused; the running configuration stays in force');
        throw err;
      };
      const openRelay = openRelayProblem(boundListeners, next.smtp);
      if (openRelay) refused(new ConfigError('reload', [{ path: 'smtp', message: `the running listeners stay bound until a restart; ${openRelay}` }]));
      const changed = changedPaths(current, next);
      const needsRestart = changed.filter((p) => RESTART_ONLY.some((r) => r.test(p)));
      const applied = changed.filter((p) => !needsRestart.includes(p));
      const graphChanged = applied.some((p) => p.startsWith('graph.') && p !== 'graph.mailbox');
      // A route's client inherits proxy, CAs and timeouts from the main graph section.
      const routesChanged = graphChanged || applied.some((p) => p.startsWith('routes'));

      // 1. Build the whole new state; nothing of it is in use yet, so a failure changes nothing.
      let nextGraph: Awaited<ReturnType<typeof createGraphClients>> | null = null;
      let nextProfiles: Awaited<ReturnType<typeof buildRouteProfiles>> | null = null;
      try {
        if (graphChanged) nextGraph = await createGraphClients(next, options.extraCaPem);
        if (routesChanged) nextProfiles = await buildRouteProfiles(next);
        if (next.smtp.tls) await assertTlsLoadable(next.smtp.tls);
      } catch (err) {
        await nextGraph?.http.close().catch(() => undefined);
        if (nextProfiles) await closeProfiles(nextProfiles);
        return refused(err);
      }

      // 2. Apply all of it, with no await until every part is in place.
      if (nextGraph) {
        const previous = graph;
        graph = nextGraph;
        tokens = observe(graph.tokens);
        // Attempts in flight finish on the old client; close it once they have had time to.
        setTimeout(() => void previous.http.close().catch(() => undefined), next.graph.requestTimeout).unref();
      }
      if (nextProfiles) {
        const previousProfiles = routeProfiles;
        routeProfiles = nextProfiles;
        setTimeout(() => void closeProfiles(previousProfiles), next.graph.requestTimeout).unref();
      }
      if (applied.some((p) => p.startsWith('delivery.'))) scheduler.updateOptions(schedulerOptions(next));
      if (applied.some((p) => p.startsWith('smtp.') || p.startsWith('routes') || p === 'graph.mailbox')) smtp.update(smtpSettings(next));
      if (applied.includes('log.level')) logger.level = next.log.level;
      current = { ...next, smtp: { ...next.smtp, listen: current.smtp.listen }, spool: current.spool, admin: current.admin };
      // SIGHUP also means "the certificate was renewed", whether or not the config changed (files checked above).
      await smtp.reloadCertificates();
      // Logged through a child with its own level, so the outcome shows whatever log.level the reload
      // set; keys that need a restart are a warning (issue 12, item 10).
      const reloadLog = logger.child({}, { level: 'info' });
      if (needsRestart.length > 0) reloadLog.warn({ event: 'config.reloaded', applied, needsRestart }, 'configuration reloaded; some changes need a restart to apply');
      else reloadLog.info({ event: 'config.reloaded', applied, needsRestart }, 'configuration reloaded');
      return { applied, needsRestart };
    },
    stop(deadlineMs = 10_000) {
      stopping ??= (async () => {
        logger.info({ event: 'relay.stopping', deadlineMs }, 'stopping: no new mail accepted');
        const smtpClosed = smtp.close();
        const { unfinished } = await scheduler.stop(deadlineMs);
        await drafts.stop();
        await Promise.race([smtpClosed, new Promise((r) => setTimeout(r, 1000))]);
        // This node's last console counts reach the shared record while the database is still open.
        await relayConsole?.flushShared();
        await spool.close();
        await admin?.close();
        relayConsole?.close();
        await graph.http.close().catch(() => undefined);
        await closeProfiles(routeProfiles);
        logger.info({ event: 'relay.stopped', unfinishedAttempts: unfinished }, 'relay stopped');
      })();
      return stopping;
    },
  };
}
