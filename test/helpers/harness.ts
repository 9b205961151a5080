/**
 * Test harness: the emulator and a relay wired together over real loopback sockets, with a
 * temporary spool. Retry delays are shortened so fault tests run in seconds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { startRelay, type RunningRelay } from '../../src/app.js';
import { validateConfig } from '../../src/config/load.js';
import type { RelayConfig, RelayConfigInput } from '../../src/config/schema.js';
import type { DeliveredMessage } from '../../src/emulator/graph-mail.js';
import { startEmulator, type EmulatorOptions, type RunningEmulator } from '../../src/emulator/server.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { Spool } from '../../src/spool/spool.js';
import type { PgCluster } from './pg-cluster.js';

export const TENANT = 'test-tenant';
export const CLIENT_ID = 'test-client';
export const CLIENT_SECRET = 'test-secret-value-3f9a';
export const MAILBOX = 'relay@contoso.example';

export interface LogRecord {
  level: string;
  event?: string;
  queueId?: string;
  [key: string]: unknown;
}

/** Captures pino output as parsed records (and as raw text, for secret-leak checks). */
export function captureLogger(level = 'debug'): { logger: Logger; records: LogRecord[]; text: () => string } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const logger = createLogger(level, sink);
  return {
    logger,
    get records() {
      return lines.map((l) => JSON.parse(l) as LogRecord);
    },
    text: () => lines.join('\n'),
  };
}

export async function startTestEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  return startEmulator({
    tenantId: TENANT,
    apps: [{ clientId: CLIENT_ID, tenantId: TENANT, secrets: [CLIENT_SECRET], roles: ['Mail.Send', 'Mail.ReadWrite', 'User.Read.All'] }],
    mailboxes: [{ upn: MAILBOX, displayName: 'Relay' }],
    ...options,
  });
}

export function relayConfigInput(emulator: RunningEmulator, spoolDir: string, overrides: Partial<Record<keyof RelayConfigInput, unknown>> = {}): Record<string, unknown> {
  return {
    smtp: { listen: '127.0.0.1:0', hostname: 'relay.test', ...(overrides.smtp as object) },
    graph: {
      tenantId: TENANT,
      clientId: CLIENT_ID,
      auth: { method: 'clientSecret', clientSecret: CLIENT_SECRET },
      mailbox: MAILBOX,
      authorityHost: emulator.url,
      endpoint: emulator.url,
      ...(overrides.graph as object),
    },
    spool: { dir: spoolDir, ...(overrides.spool as object) },
    // Exchange's 30/minute pacing is off in tests unless a test turns it on.
    delivery: { retry: { minDelay: '100ms', maxDelay: '500ms' }, perMailbox: { messagesPerMinute: 0 }, ...(overrides.delivery as object) },
    admin: { listen: '127.0.0.1:0', ...(overrides.admin as object) },
    ...(overrides.routes ? { routes: overrides.routes } : {}),
    log: { level: 'debug' },
  };
}

export interface Harness {
  emulator: RunningEmulator;
  relay: RunningRelay;
  config: RelayConfig;
  port: number;
  spoolDir: string;
  /** The PostgreSQL spool's database URL (postgres backend), or null on the file spool. */
  databaseUrl: string | null;
  logs: ReturnType<typeof captureLogger>;
  /** Stops the relay (keeping the spool) and starts a new one on the same spool. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export type SpoolBackend = 'filesystem' | 'postgres';

export interface HarnessOptions {
  emulator?: EmulatorOptions;
  config?: Partial<Record<keyof RelayConfigInput, unknown>>;
  spool?: (dir: string) => Spool;
  /**
   * The shared PostgreSQL spool (spool.backend: postgres) on a fresh database of this server (one
   * throwaway server per test file, test/helpers/pg-cluster.ts; a database per harness).
   */
  postgres?: PgCluster;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const emulator = await startTestEmulator(options.emulator);
  const spoolDir = await mkdtemp(path.join(os.tmpdir(), 'sgr-spool-'));
  const databaseUrl = options.postgres ? await options.postgres.createDatabase() : null;
  const configInput = options.config ?? {};
  const spoolInput = databaseUrl ? { ...(configInput.spool as object), backend: 'postgres', postgres: { url: databaseUrl, ...((configInput.spool as { postgres?: object } | undefined)?.postgres ?? {}) } } : configInput.spool;
  const config = validateConfig(relayConfigInput(emulator, spoolDir, { ...configInput, ...(spoolInput ? { spool: spoolInput } : {}) }), {}, 'test');
  const logs = captureLogger();
  const start = () => startRelay({ config, logger: logs.logger, extraCaPem: [emulator.caPem], ...(options.spool ? { spool: options.spool(spoolDir) } : {}) });
  const harness: Harness = {
    emulator,
    relay: await start(),
    config,
    port: 0,
    spoolDir,
    databaseUrl,
    logs,
    async restart() {
      await harness.relay.stop(2000);
      harness.relay = await start();
      harness.port = harness.relay.smtp.addresses[0]?.port ?? 0;
    },
    async close() {
      await harness.relay.stop(2000);
      await emulator.close();
      // maxRetries: a spool closed at its deadline may still be retiring a journal segment (ENOTEMPTY).
      await rm(spoolDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    },
  };
  harness.port = harness.relay.smtp.addresses[0]?.port ?? 0;
  return harness;
}

/** The harness options for one spool backend (postgres: a fresh database on `cluster`). */
export function backendOptions(backend: SpoolBackend, cluster: PgCluster | undefined): Pick<HarnessOptions, 'postgres'> {
  if (backend === 'filesystem') return {};
  if (!cluster) throw new Error('the postgres backend needs the file\'s PostgreSQL cluster (started in beforeAll)');
  return { postgres: cluster };
}

/** The delivered message carrying "X-Test-Id: <id>" (header names are case-insensitive). */
export async function waitForDelivery(emulator: RunningEmulator, testId: string, timeoutMs = 15_000): Promise<DeliveredMessage> {
  const pattern = new RegExp(`^X-Test-Id: ${testId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\r$`, 'im');
  const find = () => emulator.mail.delivered.find((m) => m.mime && pattern.test(m.mime.toString('latin1')));
  const deadline = Date.now() + timeoutMs;
  for (let found = find(); ; found = find()) {
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`message ${testId} was not delivered within ${timeoutMs} ms`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
      emulator.mail.once('delivered', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
