/**
 * Issue 11 item 7: a web page must not be able to drive the admin API, and the admin listener is
 * not opened to the network without a token. Real relay processes, raw HTTP on loopback (node:http
 * lets a test send the Host and Origin a browser or a rebinding page would).
 */
import { request } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { relayConfigInput, startTestEmulator } from '../helpers/harness.js';
import { runCli } from '../helpers/cli-run.js';
import { freePort } from '../helpers/free-port.js';
import { spawnRelay, writeConfig } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

const ADMIN_TOKEN = 'c0ffee-admin-token-for-tests-5b1d';
let emulator: RunningEmulator;
let dir: string;
let caFile: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-admin-'));
  caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  body: string;
}

/** One HTTP request to 127.0.0.1:port with exactly these headers (Host included). */
function http(port: number, method: string, pathAndQuery: string, headers: Record<string, string>): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path: pathAndQuery, headers, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('admin request timed out')));
    req.on('error', reject);
    req.end(method === 'GET' ? undefined : '{}');
  });
}

async function failedMessage(port: number): Promise<void> {
  emulator.faults.add({ route: 'sendMail', status: 400, code: 'ErrorInvalidRecipients', message: 'At least one recipient is not valid.' });
  const client = await RawSmtpClient.connect(port);
  await client.reply();
  await client.command('EHLO admin-test');
  expect((await client.send('rmm@contoso.example', ['ops@contoso.example'], 'Subject: doomed\r\n\r\nbody\r\n')).code).toBe(250);
  await client.quit();
}

describe('admin API against a web page', () => {
  it('refuses a rebinding Host (421), a text/plain or cross-origin POST (415/403), and so purges nothing', async () => {
    const adminPort = await freePort();
    const file = path.join(dir, 'plain.yaml');
    await writeConfig(file, { ...relayConfigInput(emulator, path.join(dir, 'spool-plain'), { graph: { caFile } }), admin: { listen: `127.0.0.1:${adminPort}` }, bounces: { enabled: false } });
    const relay = await spawnRelay(['serve', '--config', file]);
    try {
      const own = `127.0.0.1:${adminPort}`;
      const failed = async () => JSON.parse((await http(adminPort, 'GET', '/queue?state=failed', { host: own })).body) as unknown[];
      await failedMessage(relay.port);
      await until(async () => (await failed()).length === 1, 15_000, relay.output);

      // DNS rebinding: the page's name now points at 127.0.0.1, its requests still say so.
      expect((await http(adminPort, 'GET', '/queue', { host: 'attacker.example' })).status).toBe(421);
      expect((await http(adminPort, 'GET', '/queue', { host: `attacker.example:${adminPort}` })).status).toBe(421);
      expect((await http(adminPort, 'GET', '/queue', { host: `localhost:${adminPort}` })).status).toBe(200);

      // A cross-site form or no-cors fetch can send text/plain without a preflight.
      const purge = '/queue/purge-failed?olderThan=0';
      const plain = await http(adminPort, 'POST', purge, { host: own, 'content-type': 'text/plain', origin: 'http://attacker.example' });
      expect(plain.status).toBe(403);
      expect((await http(adminPort, 'POST', purge, { host: own, 'content-type': 'text/plain' })).status).toBe(415);
      expect((await http(adminPort, 'POST', purge, { host: own, 'content-type': 'application/json', origin: 'http://attacker.example' })).status).toBe(403);
      expect((await http(adminPort, 'PUT', '/log-level?level=trace', { host: own, 'content-type': 'text/plain' })).status).toBe(415);
      expect(await failed()).toHaveLength(1);
      expect(relay.output()).toContain('"event":"admin.refused"');

      // The same request from its own origin, as JSON, is served.
      const allowed = await http(adminPort, 'POST', purge, { host: own, 'content-type': 'application/json', origin: `http://${own}` });
      expect(allowed).toEqual({ status: 200, body: JSON.stringify({ purged: 1 }) });
    } finally {
      relay.child.kill('SIGTERM');
      await relay.exited;
    }
  });
});

describe('admin.token', () => {
  it('is required as a Bearer token on every endpoint but /healthz, and the queue CLI sends it from the config', async () => {
    const adminPort = await freePort();
    const file = path.join(dir, 'token.yaml');
    await writeConfig(file, { ...relayConfigInput(emulator, path.join(dir, 'spool-token'), { graph: { caFile } }), admin: { listen: `127.0.0.1:${adminPort}`, token: '${ADMIN_TOKEN}' } });
    const relay = await spawnRelay(['serve', '--config', file], { ADMIN_TOKEN });
    try {
      const host = `127.0.0.1:${adminPort}`;
      for (const p of ['/metrics', '/readyz', '/queue']) {
        expect((await http(adminPort, 'GET', p, { host })).status, p).toBe(401);
        expect((await http(adminPort, 'GET', p, { host, authorization: 'Bearer not-the-token-at-all' })).status, p).toBe(401);
      }
      expect((await http(adminPort, 'GET', '/healthz', { host })).status).toBe(200);
      expect((await http(adminPort, 'GET', '/metrics', { host, authorization: `Bearer ${ADMIN_TOKEN}` })).status).toBe(200);
      expect((await http(adminPort, 'POST', '/queue/retry-all', { host, 'content-type': 'application/json' })).status).toBe(401);
      expect(relay.output()).not.toContain(ADMIN_TOKEN);

      const listed = await runCli(['queue', 'list', '--json', '--config', file], { env: { ADMIN_TOKEN } });
      expect(listed.code, listed.output).toBe(0);
      expect(JSON.parse(listed.output)).toEqual([]);
      const retried = await runCli(['queue', 'retry', '--all', '--config', file], { env: { ADMIN_TOKEN } });
      expect(retried.code, retried.output).toBe(0);
      const wrong = await runCli(['queue', 'list', '--config', file], { env: { ADMIN_TOKEN: 'a-different-token-entirely' } });
      expect(wrong.code).toBe(1);
      expect(wrong.output).toContain('Authorization: Bearer');
    } finally {
      relay.child.kill('SIGTERM');
      await relay.exited;
    }
  });

  it('a non-loopback admin.listen without admin.token is refused at start (exit 78) with the reason and the fix', async () => {
    const port = await freePort();
    const file = path.join(dir, 'exposed.yaml');
    await writeConfig(file, { ...relayConfigInput(emulator, path.join(dir, 'spool-exposed'), { graph: { caFile } }), admin: { listen: `0.0.0.0:${port}` } });
    const fromFile = await runCli(['serve', '--config', file], { timeoutMs: 20_000, killIfStarted: true });
    expect(fromFile.code, fromFile.output).toBe(78);
    expect(fromFile.output).toContain(`admin.listen 0.0.0.0:${port} is not loopback and admin.token is not set`);
    expect(fromFile.output).toContain('Fix: set admin.token: "${ADMIN_TOKEN}"');

    const loopbackFile = path.join(dir, 'loopback-admin.yaml');
    await writeConfig(loopbackFile, relayConfigInput(emulator, path.join(dir, 'spool-exposed'), { graph: { caFile } }));
    const fromFlag = await runCli(['serve', '--config', loopbackFile, '--admin-listen', `0.0.0.0:${port}`], { timeoutMs: 20_000, killIfStarted: true });
    expect(fromFlag.code, fromFlag.output).toBe(78);
    expect(fromFlag.output).toContain(`--admin-listen 0.0.0.0:${port}`);
  });
});
