#!/usr/bin/env node
/**
 * Entry point: arguments, signals, exit codes. Exit codes follow sysexits(3) so systemd can tell a
 * broken configuration (78, do not restart) from a crash (1, restart).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { RunningRelay } from './app.js';
import { parseCommandLine } from './cli/commands.js';
import { stopSignalAction } from './cli/stop-signal.js';
import { ConfigError, loadConfigFile, loadConfigSections, redactConfig } from './config/load.js';
import type { CommandLineOverrides } from './config/overrides.js';
import { configSchema } from './config/schema.js';
import { createLogger } from './log.js';
import { stringify } from 'yaml';

export const EXIT = { ok: 0, failure: 1, usage: 64, config: 78 } as const;
/** Demo mode's admin address (startDemo's default), where `queue` without --config looks. */
const DEMO_ADMIN_LISTEN = '127.0.0.1:9925';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

function adminListen(value: string | undefined): string | false | undefined {
  if (value === undefined) return undefined;
  return value === 'off' ? false : value;
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseCommandLine(argv);
  if (parsed.kind === 'usage') {
    process.stderr.write(`${parsed.message}\n`);
    return EXIT.usage;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(parsed.text);
    return EXIT.ok;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`${version()}\n`);
    return EXIT.ok;
  }
  const { command, positionals } = parsed;
  const values = parsed.values as Record<string, string | undefined> & Record<'json' | 'all' | 'failed' | 'deferred' | 'held' | 'print-config' | 'ready' | 'no-browser' | 'no-open', boolean | undefined>;
  if (command === 'hash-password') {
    const { runHashPassword } = await import('./cli/hash-password.js');
    return runHashPassword(process.stdin, process.stdout, process.stderr);
  }
  const configFile = values.config ?? process.env.RELAY_CONFIG;

  try {
    if (command === 'check') {
      if (!configFile) {
        process.stderr.write('check needs --config FILE (or RELAY_CONFIG)\n');
        return EXIT.usage;
      }
      const config = await loadConfigFile(configFile);
      const { runCheck } = await import('./ops/check.js');
      return await runCheck(config, { sendTo: values['send-to'], from: values.from, out: process.stdout });
    }
    if (command === 'queue') {
      const state = values.failed ? 'failed' : values.deferred ? 'deferred' : values.held ? 'held' : undefined;
      const { runQueueCli } = await import('./ops/queue-cli.js');
      // Only the sections a queue command uses are validated (item 8 of issue 12; config loading is
      // h-admin's, this is the call site). Without a config file: the demo relay's admin and spool.
      const adminOverride = adminListen(values['admin-listen']);
      const demoDir = path.resolve(values.dir ?? process.env.RELAY_DEMO_DIR ?? '.demo');
      const queueConfig = configFile
        ? { admin: adminOverride !== undefined ? { listen: adminOverride } : (await loadConfigSections(configFile, ['admin'])).admin, spool: async () => (await loadConfigSections(configFile, ['spool'])).spool }
        : { admin: { listen: adminOverride ?? DEMO_ADMIN_LISTEN }, spool: async () => configSchema.shape.spool.parse({ dir: path.join(demoDir, 'spool') }) };
      return await runQueueCli(
        queueConfig,
        { action: positionals[1], id: positionals[2], all: values.all === true, state, olderThan: values['older-than'], json: values.json === true },
        process.stdout,
        process.stderr,
      );
    }
    if (command === 'health') {
      const { runHealth, DEFAULT_ADMIN_LISTEN } = await import('./cli/health.js');
      // RELAY_CONFIG naming a file that does not exist is the image's demo mode (Dockerfile).
      const file = values.config ?? (configFile && existsSync(configFile) ? configFile : undefined);
      const admin = file ? (await loadConfigSections(file, ['admin'])).admin : { listen: DEFAULT_ADMIN_LISTEN, token: undefined };
      return await runHealth(admin.listen, values.ready === true, process.stdout, 4000, admin.token);
    }
    if (command === 'setup') {
      const { runSetup } = await import('./setup/run-setup.js');
      return await runSetup({ configFile: values.config, noBrowser: values['no-browser'] === true, open: values['no-open'] !== true });
    }
    if (command === 'login') {
      if (!configFile) {
        process.stderr.write('login needs --config FILE (or RELAY_CONFIG)\n');
        return EXIT.usage;
      }
      const { runLogin } = await import('./ops/login.js');
      return await runLogin(await loadConfigFile(configFile), process.stdout);
    }
    if ((command === 'db' && positionals[1] === 'migrate') || (command === 'spool' && positionals[1] === 'import')) {
      if (!configFile) {
        process.stderr.write(`${command} ${positionals[1]} needs --config FILE (or RELAY_CONFIG)\n`);
        return EXIT.usage;
      }
      const config = await loadConfigFile(configFile);
      const { runDbMigrate, runSpoolImport } = await import('./ops/db-commands.js');
      return command === 'db' ? await runDbMigrate(config, process.stdout, process.stderr) : await runSpoolImport(config, values.from, process.stdout, process.stderr);
    }

    let relay: RunningRelay;
    let cleanup: () => Promise<void> = async () => undefined;
    let reloadFrom: string | null = null;
    // Command-line overrides apply to every (re)load of the file, before validation: the
    // open-relay and admin-token rules judge what will actually be bound.
    const overrides: CommandLineOverrides = { listen: values.listen, adminListen: adminListen(values['admin-listen']) };
    let relayLogger: ReturnType<typeof createLogger> | null = null;
    // Signals are taken from before the relay starts: without a handler, a SIGHUP that arrives
    // while it starts would end the process (the default action), and a SIGTERM would skip the
    // graceful stop. Both wait until the relay is up, then act (a CI run lost a reload this way).
    let isStarted = false;
    let markStarted: (relay: RunningRelay) => void = () => undefined;
    const started = new Promise<RunningRelay>((resolve) => {
      markStarted = (relay) => {
        isStarted = true;
        resolve(relay);
      };
    });
    let finish: (code: number) => void = () => undefined;
    const finished = new Promise<number>((resolve) => (finish = resolve));
    let firstStopAt: number | null = null;
    const onSignal = (signal: NodeJS.Signals) => {
      // performance.now(): a wall clock set back would make every later signal look like a repeat.
      const now = performance.now();
      const action = stopSignalAction(firstStopAt, now);
      if (action === 'same-stop') return;
      if (action === 'force') {
        process.stderr.write(`second ${signal}: exiting now; anything not delivered stays in the spool\n`);
        finish(EXIT.failure);
        // Still starting, nothing awaits `finished` yet: leave at once.
        if (!isStarted) process.exit(EXIT.failure);
        return;
      }
      firstStopAt = now;
      void started
        .then((running) => running.stop(10_000))
        .then(() => cleanup())
        .then(() => finish(EXIT.ok), () => finish(EXIT.failure));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // Windows service wrappers and consoles send SIGBREAK (Ctrl+Break) rather than SIGTERM.
    if (process.platform === 'win32') process.on('SIGBREAK', onSignal);
    process.on('SIGHUP', () => {
      void started.then((running) => {
        if (!reloadFrom) {
          process.stderr.write('SIGHUP: nothing to reload in demo mode\n');
          return;
        }
        return loadConfigFile(reloadFrom, process.env, overrides)
          .then((next) => running.reload(next))
          .then(
            () => undefined,
            (err: unknown) => {
              // One JSON event with the whole parse error (issue 12, item 10), where the other events go.
              const error = (err as Error).message;
              if (relayLogger) relayLogger.error({ event: 'config.reload_refused', file: reloadFrom, error }, 'reload refused; the running configuration stays in force');
              else process.stderr.write(`reload refused, the running configuration stays in force:\n${error}\n`);
            },
          );
      });
    });
    if (command === 'demo' || !configFile) {
      const dir = path.resolve(values.dir ?? process.env.RELAY_DEMO_DIR ?? '.demo');
      // Loaded only here: the emulator and its certificate tooling cost memory a real relay does not need.
      const { startDemo } = await import('./demo.js');
      const demo = await startDemo(dir, values.listen ?? '127.0.0.1:2525', adminListen(values['admin-listen']) ?? DEMO_ADMIN_LISTEN);
      if (values['print-config']) {
        process.stdout.write(stringify(redactConfig(demo.config)));
        await demo.emulator.close();
        return EXIT.ok;
      }
      const logger = createLogger(process.env.LOG_LEVEL ?? demo.config.log.level);
      const { startRelay } = await import('./app.js');
      relay = await startRelay({ config: demo.config, logger, extraCaPem: [demo.emulator.caPem] });
      const at = relay.smtp.addresses[0];
      process.stderr.write(
        `\nsmtp-graph-relay is running in DEMO MODE (no --config given): Graph is the embedded emulator at ${demo.emulator.url}\n` +
          `  SMTP       ${at?.host}:${at?.port}    try: swaks --server ${at?.host}:${at?.port} --to someone@example.org\n` +
          `  Delivered  ${demo.deliveredDir}/   (every message Graph accepted, as .eml)\n` +
          `  Spool      ${demo.config.spool.dir}\n` +
          `  Console    ${relay.admin ? `${relay.admin.url}/   (also /metrics /healthz /readyz /queue)` : 'off'}\n` +
          `  Stop with Ctrl+C. For a real tenant: smtp-graph-relay serve --config relay.yaml (see README).\n\n`,
      );
      cleanup = () => demo.emulator.close();
    } else {
      const config = await loadConfigFile(configFile, process.env, overrides);
      if (values['print-config']) {
        process.stdout.write(stringify(redactConfig(config)));
        return EXIT.ok;
      }
      const logger = createLogger(process.env.LOG_LEVEL ?? config.log.level);
      relayLogger = logger;
      const { startRelay } = await import('./app.js');
      relay = await startRelay({ config, logger });
      reloadFrom = configFile;
    }

    markStarted(relay);
    return await finished;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return EXIT.config;
    }
    const e = err as NodeJS.ErrnoException & { listener?: string; address?: string; port?: number };
    if (e.code === 'EADDRINUSE' && e.listener === 'admin') {
      process.stderr.write(`cannot listen on the admin address ${e.address ?? ''}:${e.port ?? ''}: another process uses that port; pick another with admin.listen or --admin-listen (--admin-listen off disables it)\n`);
      return EXIT.failure;
    }
    if (e.code === 'EADDRINUSE') {
      process.stderr.write(`cannot listen: ${e.message} - another process uses that port; pick another with --listen or smtp.listen\n`);
      return EXIT.failure;
    }
    process.stderr.write(`fatal: ${e.message}\n`);
    return EXIT.failure;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Let pino flush, then leave even if a keep-alive socket lingers.
    setTimeout(() => process.exit(code), 50).unref();
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`fatal: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(EXIT.failure);
  },
);
