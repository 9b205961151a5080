/**
 * Network and TLS failures name their cause and fix (issue 12, item 7), each produced for real on
 * loopback: a closed port, an unresolvable name (.invalid, RFC 6761), a server whose certificate is
 * not trusted, a proxy answering 407, a server that never answers, a server that does not speak TLS.
 * Asserted in `check`'s output, and for a queued message in the log and `queue show` (the real CLI).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { runCheck } from '../../src/ops/check.js';
import { startConnectProxy, type ConnectProxy } from '../helpers/connect-proxy.js';
import { MAILBOX, relayConfigInput, startHarness, startTestEmulator } from '../helpers/harness.js';
import { MAIN, writeConfig } from '../helpers/relay-process.js';
import { until } from '../helpers/wait.js';

let emu: RunningEmulator;
let proxy: ConnectProxy;
const servers: net.Server[] = [];
let closedPort = 0;
let silentPort = 0;
let plainPort = 0;

async function listen(server: net.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

beforeAll(async () => {
  emu = await startTestEmulator();
  proxy = await startConnectProxy(`Basic ${Buffer.from('relay:right').toString('base64')}`);
  const probe = net.createServer();
  closedPort = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as net.AddressInfo).port)));
  await new Promise((r) => probe.close(r));
  silentPort = await listen(net.createServer(() => undefined));
  plainPort = await listen(net.createServer((c) => c.on('data', () => c.end('HTTP/1.1 400 Bad Request\r\n\r\n')).on('error', () => undefined)));
});
afterAll(async () => {
  await emu.close();
  await proxy.close();
  for (const s of servers) s.close();
});

async function check(graph: Record<string, unknown>, trustEmulator = true) {
  let output = '';
  const out = new Writable({
    write(chunk, _e, cb) {
      output += chunk.toString();
      cb();
    },
  });
  const config = validateConfig(relayConfigInput(emu, '/tmp/unused-spool', { graph }), {}, 'test');
  const code = await runCheck(config, { out, ...(trustEmulator ? { extraCaPem: [emu.caPem] } : {}) });
  return { code, output };
}

const at = (url: string) => ({ authorityHost: url, endpoint: url });

describe('check names network and TLS causes and their fixes', () => {
  it('connection refused', async () => {
    const { code, output } = await check({ ...at(`https://127.0.0.1:${closedPort}`) });
    expect(code).toBe(1);
    expect(output).toContain(`FAIL  token: connection refused (ECONNREFUSED): 127.0.0.1:${closedPort} refused the connection`);
    expect(output).toMatch(/fix: check the host and port in graph\.endpoint/);
    expect(output).not.toContain('aka.ms/msal.js.errors');
  });

  it('DNS name not found', async () => {
    const { output } = await check({ ...at('https://login.relay-test.invalid') });
    expect(output).toContain('DNS name not found (ENOTFOUND): the name login.relay-test.invalid could not be resolved');
    expect(output).toMatch(/fix: check the host name/);
  });

  it('certificate not trusted, with the subject and issuer, and graph.caFile / NODE_EXTRA_CA_CERTS as the fix', async () => {
    const { output } = await check({}, false);
    expect(output).toContain('certificate not trusted (UNABLE_TO_VERIFY_LEAF_SIGNATURE)');
    expect(output).toMatch(/presented a certificate for "[^"]+" issued by "[^"]*CN=smtp-graph-relay emulator CA/);
    expect(output).toContain('graph.caFile or NODE_EXTRA_CA_CERTS');
  });

  it('proxy authentication required (407)', async () => {
    const { output } = await check({ proxy: proxy.url() });
    expect(output).toContain('proxy authentication required (HTTP 407)');
    expect(output).toMatch(/fix: put the proxy credentials in graph\.proxy/);
    // With the credentials, the same proxy works.
    const ok = await check({ proxy: proxy.url('relay:right') });
    expect(ok.output).toContain('ok    token acquired');
  });

  it('timeout', async () => {
    const { output } = await check({ ...at(`https://127.0.0.1:${silentPort}`), requestTimeout: '1s' });
    expect(output).toMatch(/timeout \(UND_ERR_\w+_TIMEOUT\): no answer from 127\.0\.0\.1:\d+ in time/);
    expect(output).toContain('graph.requestTimeout');
  });

  it('TLS handshake failure', async () => {
    const { output } = await check({ ...at(`https://127.0.0.1:${plainPort}`) });
    expect(output).toContain('TLS handshake failed (ERR_SSL_');
    expect(output).toMatch(/fix: check that 127\.0\.0\.1:\d+ speaks HTTPS/);
  });
});

describe('a queued message shows the cause', () => {
  it('in the log, `queue show` (the real CLI) and /readyz', async () => {
    const h = await startHarness({ config: { graph: { endpoint: `https://127.0.0.1:${closedPort}`, authorityHost: `https://127.0.0.1:${closedPort}` } } });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-netcause-'));
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
      const info = await transport.sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'cause', text: 'x' });
      transport.close();
      const id = /queued as (\w+)/.exec(info.response)?.[1] ?? '';
      await until(() => h.logs.records.some((r) => r.event === 'delivery.deferred'), 10_000);
      const deferred = h.logs.records.find((r) => r.event === 'delivery.deferred');
      expect(String(deferred?.reason)).toContain(`connection refused (ECONNREFUSED): 127.0.0.1:${closedPort} refused the connection`);
      const configFile = path.join(dir, 'relay.yaml');
      const input = relayConfigInput(h.emulator, h.spoolDir, { admin: { listen: new URL(h.relay.admin?.url ?? '').host } });
      await writeConfig(configFile, input);
      const { stdout } = await promisify(execFile)(process.execPath, [MAIN, 'queue', 'show', id, '--config', configFile], { timeout: 90_000 });
      expect(stdout).toContain('connection refused (ECONNREFUSED)');
      expect(stdout).toContain('fix: check the host and port in graph.endpoint');
      const ready = await fetch(`${h.relay.admin?.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(JSON.stringify(await ready.json())).toContain(`connection refused (ECONNREFUSED): 127.0.0.1:${closedPort} refused the connection; fix:`);
    } finally {
      await h.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
