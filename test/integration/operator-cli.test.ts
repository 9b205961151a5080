/**
 * The operator side of issue 12 (items 8-12), through the real CLI (dist/main.js) in separate
 * processes: queue commands in an admin shell and in demo mode, the admin port in use, reloads
 * refused and applied, a manual retry, and a display name that is itself the address.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { freePort } from '../helpers/free-port.js';
import { relayConfigInput, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { MAIN, spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import nodemailer from 'nodemailer';
import { until } from '../helpers/wait.js';

let emulator: RunningEmulator;
let dir: string;
let caFile: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-opcli-'));
  caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI; never throws on a non-zero exit. Env is exactly what is given (plus PATH), like a fresh admin shell. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 90_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** One message over SMTP as it is written; resolves to the server's final reply. */
async function sendRaw(port: number, to: string, raw: string): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    return (await transport.sendMail({ envelope: { from: 'relay@contoso.example', to: [to] }, raw })).response;
  } finally {
    transport.close();
  }
}

async function stop(relay: RelayProcess): Promise<void> {
  relay.child.kill('SIGTERM');
  await relay.exited;
}

async function configFile(name: string, overrides: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<{ file: string; admin: string; spool: string }> {
  const spool = path.join(dir, `${name}-spool`);
  const admin = `127.0.0.1:${await freePort()}`;
  const input = relayConfigInput(emulator, spool, { graph: { caFile }, admin: { listen: admin }, ...overrides });
  const file = path.join(dir, `${name}.yaml`);
  await writeConfig(file, { ...input, ...extra, log: { level: 'info' } });
  return { file, admin, spool };
}

describe('queue commands need only what they use (item 8)', () => {
  it('work from an admin shell without the service environment (GRAPH_CLIENT_SECRET, STATE_DIRECTORY)', async () => {
    const stateDir = path.join(dir, 'state');
    const { file } = await configFile('shell', { graph: { caFile, auth: { method: 'clientSecret', clientSecret: '${GRAPH_CLIENT_SECRET}' } } }, { spool: { dir: '${STATE_DIRECTORY}' } });
    const relay = await spawnRelay(['serve', '--config', file], { GRAPH_CLIENT_SECRET: 'test-secret-value-3f9a', STATE_DIRECTORY: stateDir });
    try {
      const listed = await cli(['queue', 'list', '--config', file]);
      expect(listed.stderr).toBe('');
      expect(listed).toMatchObject({ code: 0, stdout: 'queue is empty\n' });
    } finally {
      await stop(relay);
    }
    // Relay stopped: the command needs the spool now, and says exactly which variable is missing.
    const offline = await cli(['queue', 'list', '--config', file]);
    expect(offline.code).toBe(78);
    expect(offline.stderr).toContain('spool.dir: environment variable STATE_DIRECTORY is not set');
    expect(offline.stderr).not.toContain('GRAPH_CLIENT_SECRET');
    // With the spool named plainly (the systemd recipe), the stopped relay's queue is read directly.
    const plain = await configFile('plain', { graph: { caFile, auth: { method: 'clientSecret', clientSecret: '${GRAPH_CLIENT_SECRET}' } } }, { spool: { dir: stateDir } });
    const direct = await cli(['queue', 'list', '--config', plain.file]);
    expect(direct).toMatchObject({ code: 0, stdout: 'queue is empty\n' });
  }, 180_000);

  it('reach the demo relay without --config', async () => {
    const demoDir = path.join(dir, 'demo');
    const adminPort = await freePort();
    const relay = await spawnRelay(['demo', '--listen', '127.0.0.1:0', '--admin-listen', `127.0.0.1:${adminPort}`, '--dir', demoDir]);
    try {
      const sent = await sendRaw(relay.port, 'someone@example.org', 'From: a@example.org\r\nTo: someone@example.org\r\nSubject: demo\r\n\r\nhello\r\n');
      expect(sent).toMatch(/^250/);
      const listed = await cli(['queue', 'list', '--json', '--admin-listen', `127.0.0.1:${adminPort}`, '--dir', demoDir]);
      expect(listed.code).toBe(0);
      expect(Array.isArray(JSON.parse(listed.stdout))).toBe(true);
      // Demo stopped: the same command reads the demo's spool.
      await stop(relay);
      const offline = await cli(['queue', 'list', '--admin-listen', `127.0.0.1:${adminPort}`, '--dir', demoDir]);
      expect(offline.code).toBe(0);
    } finally {
      relay.child.kill('SIGKILL');
    }
  }, 180_000);
});

describe('the admin port in use (item 9)', () => {
  it('is reported as admin.listen / --admin-listen', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      const { file } = await configFile('busy', {});
      const { code, stderr } = await cli(['serve', '--config', file, '--admin-listen', `127.0.0.1:${port}`]);
      expect(code).toBe(1);
      expect(stderr).toContain(`cannot listen on the admin address 127.0.0.1:${port}`);
      expect(stderr).toContain('admin.listen or --admin-listen');
      expect(stderr).not.toContain('smtp.listen');
    } finally {
      busy.close();
    }
  }, 120_000);
});

describe('reloads are visible (item 10)', () => {
  it('logs a refused reload as config.reload_refused at error with the whole parse error, and a restart-needing one at warn', async () => {
    const { file } = await configFile('reload', {});
    const relay = await spawnRelay(['serve', '--config', file]);
    const events = () => relay.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    try {
      const good = await import('node:fs/promises').then((fs) => fs.readFile(file, 'utf8'));
      await writeFile(file, `${good}\nsmtp:\n  listen: twice\n`);
      relay.child.kill('SIGHUP');
      await until(() => events().some((e) => e.event === 'config.reload_refused'), 10_000, relay.output);
      const refused = events().find((e) => e.event === 'config.reload_refused');
      expect(refused).toMatchObject({ level: 'error', error: expect.stringContaining('YAML syntax') });
      expect(String(refused?.error)).toContain(file);
      // Applied, with a key that needs a restart, while the reload also turns the log level down to error.
      await writeFile(file, good.replace(/listen: 127\.0\.0\.1:0/, 'listen: 127.0.0.1:1').replace(/level: info/, 'level: error'));
      relay.child.kill('SIGHUP');
      await until(() => events().some((e) => e.event === 'config.reloaded'), 10_000, relay.output);
      expect(events().find((e) => e.event === 'config.reloaded')).toMatchObject({ level: 'warn', needsRestart: expect.arrayContaining(['smtp.listen']) });
    } finally {
      await stop(relay);
    }
  }, 180_000);
});

describe('a manual queue retry (item 11)', () => {
  it('does not push the next automatic attempt further out', async () => {
    const { file } = await configFile('retry', { delivery: { retry: { minDelay: '60s', maxDelay: '1h' }, perMailbox: { messagesPerMinute: 0 } } });
    emulator.faults.add({ route: 'sendMail', status: 500, code: 'generalException', times: 1000 });
    const relay = await spawnRelay(['serve', '--config', file]);
    try {
      const reply = await sendRaw(relay.port, 'ops@contoso.example', 'From: relay@contoso.example\r\nTo: ops@contoso.example\r\nSubject: retry\r\n\r\nx\r\n');
      const id = /queued as (\w+)/.exec(reply)?.[1] ?? '';
      // Attempts are followed in the relay's log; each CLI start costs seconds on a loaded machine.
      const deferredAfter = (attempts: number) => relay.output().split('\n').some((l) => l.includes('"event":"delivery.deferred"') && l.includes(`"attempts":${attempts},`));
      const show = async () => JSON.parse((await cli(['queue', 'show', id, '--json', '--config', file])).stdout) as { entry: { attempts: number; nextAttemptAt: number } };
      await until(() => deferredAfter(1), 20_000, relay.output);
      const scheduled = (await show()).entry.nextAttemptAt;
      expect((await cli(['queue', 'retry', id, '--config', file])).code).toBe(0);
      await until(() => deferredAfter(2), 20_000, relay.output);
      const after = (await show()).entry;
      expect(after.attempts).toBe(2);
      // Before: the retry added a backoff step (the next attempt 90-150 s out instead of at `scheduled`).
      expect(after.nextAttemptAt).toBe(scheduled);
    } finally {
      emulator.faults.clear();
      await stop(relay);
    }
  }, 180_000);
});

describe('a display name that is itself the address (item 12)', () => {
  it('is treated like any other address-like display name', async () => {
    const { file } = await configFile('display', {});
    const relay = await spawnRelay(['serve', '--config', file]);
    try {
      // As sendemail writes it.
      await sendRaw(relay.port, 'ops@contoso.example', 'From: "sw@contoso.example" <sw@contoso.example>\r\nTo: ops@contoso.example\r\nSubject: disk full\r\nX-Test-Id: display-self\r\n\r\nalert\r\n');
      const delivered = await waitForDelivery(emulator, 'display-self', 15_000);
      const header = (delivered.mime as Buffer).toString('latin1').split('\r\n\r\n')[0] ?? '';
      expect(header).toMatch(/^From: "sw at contoso\.example" <sw@contoso\.example>\r?$/m);
    } finally {
      await stop(relay);
    }
  }, 120_000);
});
