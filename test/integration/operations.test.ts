/**
 * Operating a running relay: queue commands through the CLI (via the admin API, and on the spool
 * when the relay is stopped), metrics that move with deliveries, throttling and failures, readiness
 * that follows the token endpoint, and a SIGTERM under load that loses nothing and duplicates nothing.
 * Run on both spools: the file spool, and the shared PostgreSQL queue (one throwaway server for the
 * file, a fresh database per test), where a stopped relay's queue commands work straight on the
 * database and /metrics shows the cluster's queue beside this node's own counters.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import type { QueueItem } from '../../src/ops/queue-control.js';
import { backendOptions, MAILBOX, relayConfigInput, startHarness, startTestEmulator, waitForDelivery, type SpoolBackend } from '../helpers/harness.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { freePort } from '../helpers/free-port.js';
import { runProcess } from '../helpers/processes.js';
import { MAIN, spawnRelay, writeConfig } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let emulator: RunningEmulator;
let cluster: PgCluster;
let dir: string;
beforeAll(async () => {
  [emulator, cluster] = await Promise.all([startTestEmulator(), startPgCluster()]);
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-ops-'));
}, 120_000);
afterAll(async () => {
  await emulator.close();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function sendOne(port: number, testId: string): Promise<string> {
  const client = await RawSmtpClient.connect(port);
  await client.reply();
  await client.command('EHLO ops');
  const reply = await client.send('rmm@contoso.example', ['ops@contoso.example'], `Subject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nbody\r\n`);
  await client.quit();
  expect(reply.code).toBe(250);
  return /queued as (\S+)/.exec(reply.text)?.[1] as string;
}

/** The spool settings beside spool.dir for a relay process on `backend` (postgres: a fresh database on the file's server). */
async function spoolSettings(backend: SpoolBackend): Promise<Record<string, unknown>> {
  return backend === 'filesystem' ? {} : { backend: 'postgres', postgres: { url: await cluster.createDatabase() } };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format, one sample per line (the label values here hold no escaped quotes). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1] as string, l[2] as string]));
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the sample `name` carrying at least `labels` (NaN when there is none). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value ?? Number.NaN;
}

/**
 * What the spool still holds for delivery: queue/ files, or the database's message rows (an intake
 * cut by the stop may leave a 'receiving' row, never delivered and swept after an hour: not counted).
 */
async function spoolLeft(spoolDir: string, spool: Record<string, unknown>): Promise<number> {
  if (spool.backend !== 'postgres') return (await readdir(path.join(spoolDir, 'queue'))).length;
  const client = new pg.Client({ connectionString: (spool.postgres as { url: string }).url });
  await client.connect();
  try {
    return (await client.query<{ n: number }>("SELECT count(*)::int AS n FROM relay.messages WHERE state <> 'receiving'")).rows[0]?.n ?? -1;
  } finally {
    await client.end();
  }
}

async function fetchText(url: string): Promise<string> {
  return (await fetch(url)).text();
}

describe.each(['filesystem', 'postgres'] as const)('%s spool', (backend: SpoolBackend) => {
  describe('queue commands', () => {
    it('list, show, hold, release, retry, delete and purge work on a running relay and on a stopped one', async () => {
      const adminPort = await freePort();
      const configFile = path.join(dir, `queue-${backend}.yaml`);
      const caFile = path.join(dir, 'ca.pem');
      await writeFile(caFile, emulator.caPem);
      const spoolDir = path.join(dir, `queue-spool-${backend}`);
      const spool = await spoolSettings(backend);
      // Long retry delays: deferred messages stay deferred until an operator acts.
      const writeNodeConfig = (file: string, port: number, nodeSpoolDir: string) =>
        writeConfig(file, {
          ...relayConfigInput(emulator, nodeSpoolDir, { graph: { caFile }, delivery: { retry: { minDelay: '1h', maxDelay: '2h' } }, spool }),
          admin: { listen: `127.0.0.1:${port}` },
          log: { level: 'info' },
          // No DSNs here: a bounce would compete with the messages for the injected faults.
          bounces: { enabled: false },
        });
      await writeNodeConfig(configFile, adminPort, spoolDir);
      const cliOn = (file: string) => (...args: string[]) => runProcess(process.execPath, [MAIN, 'queue', ...args, '--config', file], { timeoutMs: 15_000, waitingFor: `queue ${args.join(' ')} to exit` });
      const cli = cliOn(configFile);
      // On PostgreSQL a second relay shares the queue, and some commands go through its admin API
      // (issue 13: "through any node's admin API"); on the file spool they all go to the one relay.
      const secondConfigFile = path.join(dir, `queue-${backend}-node2.yaml`);
      if (backend === 'postgres') await writeNodeConfig(secondConfigFile, await freePort(), path.join(dir, 'queue-spool-node2'));
      const cli2 = backend === 'postgres' ? cliOn(secondConfigFile) : cli;
      const listed = async (...flags: string[]) => JSON.parse((await cli('list', '--json', ...flags)).stdout) as Array<{ id: string; state: string }>;
      // Waits poll the admin API itself (a CLI process costs seconds on a loaded 2-core machine);
      // every assertion below goes through the CLI.
      const queued = async (state?: string) => (await (await fetch(`http://127.0.0.1:${adminPort}/queue${state ? `?state=${state}` : ''}`)).json()) as QueueItem[];
      const id = (name: string) => `q-${backend}-${name}`;

      const relay = await spawnRelay(['serve', '--config', configFile]);
      const second = backend === 'postgres' ? await spawnRelay(['serve', '--config', secondConfigFile]).catch(async (err: unknown) => {
        await relay.stop();
        throw err;
      }) : null;
      let stopCodes: Array<number | null> = [];
      let f = '';
      try {
        emulator.faults.add({ route: 'sendMail', status: 503, times: 2 }, { route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
        const a = await sendOne(relay.port, id('a'));
        await until(async () => (await queued('deferred')).some((i) => i.id === a));
        const b = await sendOne(relay.port, id('b'));
        await until(async () => (await queued('deferred')).some((i) => i.id === b));
        const c = await sendOne(relay.port, id('c'));
        await until(async () => (await queued('failed')).some((i) => i.id === c));

        expect((await listed()).map((i) => `${i.id}:${i.state}`).sort()).toEqual([`${a}:deferred`, `${b}:deferred`, `${c}:failed`].sort());
        const shown = await cli('show', a);
        expect(shown.stdout).toMatch(new RegExp(`^${a}  deferred`));
        expect(shown.stdout).toMatch(/last error \(transient\): HTTP 503 serviceNotAvailable: Injected fault\. {2}request-id [0-9a-f-]{36}/);
        expect(shown.stdout).toMatch(/next attempt .* \(in \d+m\)/);
        const shownFailed = (await cli('show', c)).stdout;
        expect(shownFailed).toContain('failed');
        expect(shownFailed).toContain('ErrorInvalidRecipients');

        expect((await cli2('hold', a)).code).toBe(0);
        expect((await listed('--held')).map((i) => i.id)).toEqual([a]);
        expect((await cli2('retry', b)).code).toBe(0);
        await waitForDelivery(emulator, id('b'));
        expect((await cli('release', a)).code).toBe(0);
        await waitForDelivery(emulator, id('a'));
        expect((await cli2('retry', c)).code).toBe(0);
        await waitForDelivery(emulator, id('c'));
        await until(async () => (await queued()).length === 0);

        emulator.faults.add({ route: 'sendMail', status: 400, times: 3 });
        const d = await sendOne(relay.port, id('d'));
        const e = await sendOne(relay.port, id('e'));
        f = await sendOne(relay.port, id('f'));
        await until(async () => (await queued('failed')).length === 3);
        expect((await cli2('delete', d)).code).toBe(0);
        expect((await listed('--failed')).map((i) => i.id)).toEqual([e, f]);
        expect((await cli('purge', '--failed', '--older-than', '1h')).stdout).toContain('purged: 0');
        const missing = await cli('show', d);
        expect(missing.code).toBe(1);
        expect(missing.stderr).toContain(`no message ${d}`);
      } finally {
        stopCodes = await Promise.all([relay, ...(second ? [second] : [])].map((r) => r.stop('SIGTERM', 20_000)));
      }
      expect(stopCodes).toEqual(backend === 'postgres' ? [0, 0] : [0]);
      // Stopped relay: the same commands work on the spool itself (the files, or the database).
      // Given with admin.listen off: under a parallel CI run another test's server can bind the
      // freed admin port, and a command would then ask that server (the fallback when nothing
      // answers on admin.listen is tested in operator-cli.test.ts). A CI run saw `list` come back
      // empty here once.
      const offlineConfig = path.join(dir, `queue-${backend}-offline.yaml`);
      await writeConfig(offlineConfig, { ...relayConfigInput(emulator, spoolDir, { graph: { caFile }, spool }), admin: { listen: false } });
      const cliOffline = cliOn(offlineConfig);
      const listedOffline = async (...flags: string[]) => JSON.parse((await cliOffline('list', '--json', ...flags)).stdout) as Array<{ id: string; state: string }>;
      const offline = await listedOffline('--failed');
      expect(offline).toHaveLength(2);
      const [e] = offline.map((i) => i.id).filter((i) => i !== f) as [string];
      expect((await cliOffline('retry', e)).code).toBe(0);
      expect((await cliOffline('purge', '--failed', '--older-than', '0s')).stdout).toContain('purged: 1');
      // Back in the queue with its attempts kept: deferred (stateOf in queue-control.ts).
      expect((await listedOffline()).map((i) => `${i.id}:${i.state}`)).toEqual([`${e}:deferred`]);
      expect((await cliOffline('hold', e)).code).toBe(0);
      expect((await cliOffline('show', e)).stdout).toMatch(new RegExp(`^${e}  held`));
      expect((await cliOffline('release', e)).code).toBe(0);
      expect((await cliOffline('delete', e)).code).toBe(0);
      expect(await listedOffline()).toEqual([]);
      // About 30 CLI processes in a row, each with its own 15 s deadline; several seconds each on a loaded 2-core machine.
    }, 180_000);
  });

  describe('metrics and health', () => {
    it('moves delivered, deferred (429) and failed counters and reports queue gauges', async () => {
      const h = await startHarness(backendOptions(backend, cluster));
      const nodes: Array<Awaited<ReturnType<typeof spawnRelay>>> = [];
      try {
        const metrics = async (url = h.relay.admin?.url) => parseMetrics(await fetchText(`${url}/metrics`));
        const transport = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
        await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm1', text: 'x', headers: { 'X-Test-Id': 'm-1' } });
        await waitForDelivery(h.emulator, 'm-1');
        await until(async () => value(await metrics(), 'relay_messages_delivered_total', { mailbox: MAILBOX }) === 1);

        h.emulator.faults.add({ route: 'sendMail', status: 429, retryAfter: '0.3' });
        await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm2', text: 'x', headers: { 'X-Test-Id': 'm-2' } });
        await waitForDelivery(h.emulator, 'm-2');
        h.emulator.faults.add({ route: 'sendMail', status: 400 });
        await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm3', text: 'x' });
        await until(async () => value(await metrics(), 'relay_messages_failed_total', { reason: 'permanent' }) === 1);
        // The failure also produced a delivery status notification to the sender: delivered too.
        await until(async () => value(await metrics(), 'relay_messages_delivered_total', { mailbox: MAILBOX }) === 3);
        // A cluster's queue figures are read from the database in the background (every 2 s, on the
        // 1 s poll), so the gauge follows the delivery of the bounce within about 3 s.
        await until(async () => value(await metrics(), 'relay_queue_depth') === 0, 10_000);
        const samples = await metrics();
        expect(value(samples, 'relay_messages_delivered_total', { mailbox: MAILBOX })).toBe(3);
        expect(value(samples, 'relay_messages_deferred_total', { kind: 'transient', status: '429' })).toBe(1);
        expect(value(samples, 'relay_graph_throttled_total', { mailbox: MAILBOX })).toBe(1);
        expect(value(samples, 'relay_messages_received_total', { result: 'queued' })).toBe(3);
        expect(value(samples, 'relay_queue_depth')).toBe(0);
        expect(value(samples, 'relay_queue_failed')).toBe(1);
        expect(value(samples, 'relay_token_acquisitions_total', { result: 'ok' })).toBeGreaterThanOrEqual(1);
        expect(value(samples, 'relay_graph_request_duration_seconds_count', { status: '202' })).toBe(3);
        expect(samples.some((s) => s.name === 'relay_queue_oldest_age_seconds')).toBe(true);
        // In a cluster every sample carries the node's name (host:pid, here this test process);
        // a single relay's carry none.
        const nodeLabels = new Set(samples.filter((s) => s.name.startsWith('relay_')).map((s) => s.labels.node));
        expect([...nodeLabels]).toEqual([backend === 'postgres' ? `${os.hostname()}:${process.pid}` : undefined]);

        // A message parked by a 503 with Retry-After 60 s waits in the queue: depth and age show it.
        h.emulator.faults.add({ route: 'sendMail', status: 503, retryAfter: '60' });
        await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm4', text: 'x', headers: { 'X-Test-Id': 'm-4' } });
        // The PostgreSQL node refreshes the cluster's figures every 2 s (claim-loop.ts): waited for.
        await until(async () => {
          const s = await metrics();
          return value(s, 'relay_messages_deferred_total', { kind: 'transient', status: '503' }) === 1 && value(s, 'relay_queue_depth') === 1 && value(s, 'relay_queue_oldest_age_seconds') > 0;
        });
        if (backend === 'postgres') {
          // A second node of the cluster (its own process, so its own name) on the same database: it
          // reports the cluster's queue (the message another node accepted, the failed one) and
          // only its own counters (it has received and delivered nothing).
          const caFile = path.join(dir, 'ca-metrics.pem');
          await writeFile(caFile, h.emulator.caPem);
          const adminPort = await freePort();
          const configFile = path.join(dir, 'metrics-node2.yaml');
          await writeConfig(configFile, {
            ...relayConfigInput(h.emulator, path.join(dir, 'metrics-node2-spool'), { graph: { caFile }, spool: { backend: 'postgres', postgres: { url: h.databaseUrl } } }),
            admin: { listen: `127.0.0.1:${adminPort}` },
            log: { level: 'info' },
          });
          const second = await spawnRelay(['serve', '--config', configFile]);
          nodes.push(second);
          const url = `http://127.0.0.1:${adminPort}`;
          await until(async () => value(await metrics(url), 'relay_queue_depth') === 1, 10_000);
          const other = await metrics(url);
          expect(value(other, 'relay_queue_failed')).toBe(1);
          expect(value(other, 'relay_queue_oldest_age_seconds')).toBeGreaterThan(0);
          expect(other.filter((s) => s.name === 'relay_messages_delivered_total' || s.name === 'relay_messages_received_total')).toEqual([]);
          expect(new Set(other.filter((s) => s.name.startsWith('relay_')).map((s) => s.labels.node))).toEqual(new Set([`${os.hostname()}:${second.child.pid}`]));
        }
      } finally {
        for (const node of nodes) await node.stop();
        await h.close();
      }
    }, 60_000);

    it('turns /readyz unready when the token endpoint fails, and ready again after', async () => {
      const h = await startHarness(backendOptions(backend, cluster));
      try {
        const readyz = async () => {
          const res = await fetch(`${h.relay.admin?.url}/readyz`);
          return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> } };
        };
        expect((await fetch(`${h.relay.admin?.url}/healthz`)).status).toBe(200);
        expect((await readyz()).status).toBe(200);
        h.emulator.identity.tokenLifetimeSeconds = 301;
        await h.relay.tokens.getToken({ forceRefresh: true }); // a token that MSAL renews within 2 s
        await new Promise((r) => setTimeout(r, 2100));
        h.emulator.faults.add({ route: 'token', status: 401, code: 'invalid_client', message: 'Invalid client secret provided.' });
        const down = await readyz();
        expect(down.status).toBe(503);
        expect(down.body.checks.token).toMatchObject({ ok: false });
        expect(down.body.checks.spool).toEqual({ ok: true });
        const up = await readyz();
        expect(up.status).toBe(200);
      } finally {
        await h.close();
      }
    });
  });

  describe('graceful stop', () => {
    it('SIGTERM under load: every acknowledged message is delivered once, none twice', async () => {
      const configFile = path.join(dir, `term-${backend}.yaml`);
      const caFile = path.join(dir, 'ca-term.pem');
      await writeFile(caFile, emulator.caPem);
      const spoolDir = path.join(dir, `term-spool-${backend}`);
      const spool = await spoolSettings(backend);
      await writeConfig(configFile, { ...relayConfigInput(emulator, spoolDir, { graph: { caFile }, spool }), log: { level: 'info' } });
      emulator.mail.latencyMs = 30;
      const before = emulator.mail.delivered.length;
      const first = await spawnRelay(['serve', '--config', configFile]);
      const acked = new Set<string>();
      let stop = false;
      const sender = async (name: string) => {
        for (let i = 0; !stop; i++) {
          try {
            const client = await RawSmtpClient.connect(first.port);
            const greeting = await client.reply(2000);
            if (greeting.code !== 220) return client.destroy();
            await client.command('EHLO load');
            const id = `term-${backend}-${name}-${i}`;
            const reply = await client.send('rmm@contoso.example', ['ops@contoso.example'], `Subject: ${id}\r\nX-Test-Id: ${id}\r\n\r\nbody\r\n`);
            if (reply.code === 250) acked.add(id);
            client.destroy();
          } catch {
            return;
          }
        }
      };
      const senders = Array.from({ length: 6 }, (_, i) => sender(`s${i}`));
      let firstCode: number | null;
      try {
        await until(() => acked.size >= 80, 20_000, () => `waiting for 80 acknowledged messages before the SIGTERM; ${acked.size} so far`);
      } finally {
        firstCode = await first.stop('SIGTERM', 20_000); // the drain takes up to 10 s
        stop = true;
        await Promise.all(senders);
      }
      expect(firstCode).toBe(0);
      expect(first.output()).toContain('"event":"relay.stopped"');

      const second = await spawnRelay(['serve', '--config', configFile]);
      try {
        const ids = () => emulator.mail.delivered.slice(before).map((m) => /X-Test-Id: (\S+)/i.exec(m.mime?.toString('latin1') ?? '')?.[1]);
        const missing = () => [...acked].filter((id) => !ids().includes(id));
        await until(() => missing().length === 0, 30_000, () => `waiting for every acknowledged message after the restart; missing: ${missing().join(', ')}`);
        const counts = new Map<string, number>();
        for (const id of ids()) counts.set(id as string, (counts.get(id as string) ?? 0) + 1);
        expect([...counts.entries()].filter(([, n]) => n > 1)).toEqual([]);
        // Nothing is left to be sent again later: queue/ is empty, or on PostgreSQL the shared
        // queue's table (no row kept by a lease or an outcome that was not recorded).
        await until(async () => (await spoolLeft(spoolDir, spool)) === 0, 15_000, () => 'the spool still holds messages 15 s after every message was delivered');
      } finally {
        await second.stop();
        emulator.mail.latencyMs = 0;
      }
    }, 120_000);
  });

  describe('configuration reload', () => {
    it('SIGHUP applies safe changes, names those that need a restart, and refuses a broken file', async () => {
      emulator.mail.addMailbox({ upn: 'second@contoso.example', displayName: 'Second' });
      const configFile = path.join(dir, `reload-${backend}.yaml`);
      const caFile = path.join(dir, 'ca-reload.pem');
      await writeFile(caFile, emulator.caPem);
      const spoolDir = path.join(dir, `reload-spool-${backend}`);
      const spool = await spoolSettings(backend);
      const base: Record<string, unknown> = { ...relayConfigInput(emulator, spoolDir, { graph: { caFile }, spool }), log: { level: 'info' } };
      await writeConfig(configFile, base);
      const relay = await spawnRelay(['serve', '--config', configFile]);
      try {
        const changed = { ...base, smtp: { ...(base.smtp as object), listen: '127.0.0.1:1', maxRecipients: 10 }, graph: { ...(base.graph as object), mailbox: 'second@contoso.example' }, log: { level: 'debug' } };
        await writeConfig(configFile, changed);
        relay.child.kill('SIGHUP');
        await until(() => relay.output().includes('"event":"config.reloaded"'), 10_000, relay.output);
        const line = JSON.parse(relay.output().split('\n').find((l) => l.includes('"event":"config.reloaded"')) as string) as { applied: string[]; needsRestart: string[] };
        expect(line.needsRestart).toEqual(['smtp.listen']);
        expect(line.applied.sort()).toEqual(['graph.mailbox', 'log.level', 'smtp.maxRecipients']);
        await sendOne(relay.port, `reload-${backend}-1`);
        expect((await waitForDelivery(emulator, `reload-${backend}-1`)).mailbox).toBe('second@contoso.example');

        await writeFile(configFile, 'smtp: [not, a, map]\n');
        relay.child.kill('SIGHUP');
        await until(() => relay.output().includes('reload refused'), 10_000, relay.output);
        await sendOne(relay.port, `reload-${backend}-2`);
        expect((await waitForDelivery(emulator, `reload-${backend}-2`)).mailbox).toBe('second@contoso.example');
      } finally {
        await relay.stop();
      }
    });
  });
});
