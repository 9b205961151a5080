/**
 * Operating a running relay: queue commands through the CLI (via the admin API, and on the spool
 * when the relay is stopped), metrics that move with deliveries, throttling and failures, readiness
 * that follows the token endpoint, and a SIGTERM under load that loses nothing and duplicates nothing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { MAILBOX, relayConfigInput, startHarness, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { runProcess } from '../helpers/processes.js';
import { MAIN, spawnRelay, writeConfig } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let emulator: RunningEmulator;
let dir: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-ops-'));
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

async function sendOne(port: number, testId: string): Promise<string> {
  const client = await RawSmtpClient.connect(port);
  await client.reply();
  await client.command('EHLO ops');
  const reply = await client.send('rmm@contoso.example', ['ops@contoso.example'], `Subject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nbody\r\n`);
  await client.quit();
  expect(reply.code).toBe(250);
  return /queued as (\S+)/.exec(reply.text)?.[1] as string;
}


describe('queue commands', () => {
  it('list, show, hold, release, retry, delete and purge work on a running relay and on a stopped one', async () => {
    const adminPort = await freePort();
    const configFile = path.join(dir, 'queue.yaml');
    const caFile = path.join(dir, 'ca.pem');
    await writeFile(caFile, emulator.caPem);
    const spoolDir = path.join(dir, 'queue-spool');
    // Long retry delays: deferred messages stay deferred until an operator acts.
    await writeConfig(configFile, { ...relayConfigInput(emulator, spoolDir, { graph: { caFile }, delivery: { retry: { minDelay: '1h', maxDelay: '2h' } } }), admin: { listen: `127.0.0.1:${adminPort}` }, log: { level: 'info' },
      // No DSNs here: a bounce would compete with the messages for the injected faults.
      bounces: { enabled: false } });
    const cli = (...args: string[]) => runProcess(process.execPath, [MAIN, 'queue', ...args, '--config', configFile], { timeoutMs: 15_000, waitingFor: `queue ${args.join(' ')} to exit` });
    const listed = async (...flags: string[]) => JSON.parse((await cli('list', '--json', ...flags)).stdout) as Array<{ id: string; state: string }>;

    const relay = await spawnRelay(['serve', '--config', configFile]);
    let stopCode: number | null = null;
    try {
      emulator.faults.add({ route: 'sendMail', status: 503, times: 2 }, { route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
      const a = await sendOne(relay.port, 'q-a');
      await until(async () => (await listed('--deferred')).some((i) => i.id === a));
      const b = await sendOne(relay.port, 'q-b');
      await until(async () => (await listed('--deferred')).some((i) => i.id === b));
      const c = await sendOne(relay.port, 'q-c');
      await until(async () => (await listed('--failed')).some((i) => i.id === c));

      expect((await listed()).map((i) => `${i.id}:${i.state}`).sort()).toEqual([`${a}:deferred`, `${b}:deferred`, `${c}:failed`].sort());
      const shown = await cli('show', a);
      expect(shown.stdout).toMatch(new RegExp(`^${a}  deferred`));
      expect(shown.stdout).toMatch(/last error \(transient\): HTTP 503 serviceNotAvailable: Injected fault\. {2}request-id [0-9a-f-]{36}/);
      expect(shown.stdout).toMatch(/next attempt .* \(in \d+m\)/);
      expect((await cli('show', c)).stdout).toContain('failed');
      expect((await cli('show', c)).stdout).toContain('ErrorInvalidRecipients');

      expect((await cli('hold', a)).code).toBe(0);
      expect((await listed('--held')).map((i) => i.id)).toEqual([a]);
      expect((await cli('retry', b)).code).toBe(0);
      await waitForDelivery(emulator, 'q-b');
      expect((await cli('release', a)).code).toBe(0);
      await waitForDelivery(emulator, 'q-a');
      expect((await cli('retry', c)).code).toBe(0);
      await waitForDelivery(emulator, 'q-c');
      await until(async () => (await listed()).length === 0);

      emulator.faults.add({ route: 'sendMail', status: 400, times: 2 });
      const d = await sendOne(relay.port, 'q-d');
      const e = await sendOne(relay.port, 'q-e');
      await until(async () => (await listed('--failed')).length === 2);
      expect((await cli('delete', d)).code).toBe(0);
      expect((await listed('--failed')).map((i) => i.id)).toEqual([e]);
      expect((await cli('purge', '--failed', '--older-than', '1h')).stdout).toContain('purged: 0');
      const missing = await cli('show', d);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain(`no message ${d}`);
    } finally {
      stopCode = await relay.stop('SIGTERM', 20_000);
    }
    expect(stopCode).toBe(0);
    // Stopped relay: the same commands work on the spool files.
    const offline = await listed('--failed');
    expect(offline).toHaveLength(1);
    expect((await cli('purge', '--failed', '--older-than', '0s')).stdout).toContain('purged: 1');
    expect(await listed()).toEqual([]);
    // About 20 CLI processes in a row, each with its own 15 s deadline; several seconds each on a loaded 2-core machine.
  }, 120_000);
});

describe('metrics and health', () => {
  it('moves delivered, deferred (429) and failed counters and reports queue gauges', async () => {
    const h = await startHarness();
    try {
      const metrics = async () => (await fetchText(`${h.relay.admin?.url}/metrics`)).split('\n');
      const value = (lines: string[], name: string) => Number(lines.find((l) => l.startsWith(name))?.split(' ').pop() ?? 'NaN');
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
      await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm1', text: 'x', headers: { 'X-Test-Id': 'm-1' } });
      await waitForDelivery(h.emulator, 'm-1');
      await until(async () => value(await metrics(), `relay_messages_delivered_total{mailbox="${MAILBOX}"}`) === 1);

      h.emulator.faults.add({ route: 'sendMail', status: 429, retryAfter: '0.3' });
      await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm2', text: 'x', headers: { 'X-Test-Id': 'm-2' } });
      await waitForDelivery(h.emulator, 'm-2');
      h.emulator.faults.add({ route: 'sendMail', status: 400 });
      await transport.sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'm3', text: 'x' });
      await until(async () => value(await metrics(), 'relay_messages_failed_total{reason="permanent"}') === 1);
      // The failure also produced a delivery status notification to the sender: delivered too.
      await until(async () => value(await metrics(), `relay_messages_delivered_total{mailbox="${MAILBOX}"}`) === 3);
      const lines = await metrics();
      expect(value(lines, `relay_messages_delivered_total{mailbox="${MAILBOX}"}`)).toBe(3);
      expect(value(lines, 'relay_messages_deferred_total{kind="transient",status="429"}')).toBe(1);
      expect(value(lines, `relay_graph_throttled_total{mailbox="${MAILBOX}"}`)).toBe(1);
      expect(value(lines, 'relay_messages_received_total{result="queued"}')).toBe(3);
      expect(value(lines, 'relay_queue_depth')).toBe(0);
      expect(value(lines, 'relay_queue_failed')).toBe(1);
      expect(value(lines, 'relay_token_acquisitions_total{result="ok"}')).toBeGreaterThanOrEqual(1);
      expect(value(lines, 'relay_graph_request_duration_seconds_count{status="202"}')).toBe(3);
      expect(lines.some((l) => l.startsWith('relay_queue_oldest_age_seconds'))).toBe(true);
    } finally {
      await h.close();
    }
  });

  it('turns /readyz unready when the token endpoint fails, and ready again after', async () => {
    const h = await startHarness();
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

async function fetchText(url: string): Promise<string> {
  return (await fetch(url)).text();
}

describe('graceful stop', () => {
  it('SIGTERM under load: every acknowledged message is delivered once, none twice', async () => {
    const spoolDir = path.join(dir, 'term-spool');
    const configFile = path.join(dir, 'term.yaml');
    const caFile = path.join(dir, 'ca-term.pem');
    await writeFile(caFile, emulator.caPem);
    await writeConfig(configFile, { ...relayConfigInput(emulator, spoolDir, { graph: { caFile } }), log: { level: 'info' } });
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
          const id = `term-${name}-${i}`;
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
    } finally {
      await second.stop();
      emulator.mail.latencyMs = 0;
    }
  }, 120_000);
});

describe('configuration reload', () => {
  it('SIGHUP applies safe changes, names those that need a restart, and refuses a broken file', async () => {
    emulator.mail.addMailbox({ upn: 'second@contoso.example', displayName: 'Second' });
    const configFile = path.join(dir, 'reload.yaml');
    const caFile = path.join(dir, 'ca-reload.pem');
    await writeFile(caFile, emulator.caPem);
    const base: Record<string, unknown> = { ...relayConfigInput(emulator, path.join(dir, 'reload-spool'), { graph: { caFile } }), log: { level: 'info' } };
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
      await sendOne(relay.port, 'reload-1');
      expect((await waitForDelivery(emulator, 'reload-1')).mailbox).toBe('second@contoso.example');

      await writeFile(configFile, 'smtp: [not, a, map]\n');
      relay.child.kill('SIGHUP');
      await until(() => relay.output().includes('reload refused'), 10_000, relay.output);
      await sendOne(relay.port, 'reload-2');
      expect((await waitForDelivery(emulator, 'reload-2')).mailbox).toBe('second@contoso.example');
    } finally {
      await relay.stop();
    }
  });
});
