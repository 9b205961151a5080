/**
 * Issue 11 item 1: the open-relay guard judges the effective configuration - the file plus
 * command-line overrides, every listener - at start and at every reload, with the real CLI.
 */
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

let emulator: RunningEmulator;
let dir: string;
let caFile: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-guard-'));
  caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

async function greeting(port: number): Promise<number> {
  const client = await RawSmtpClient.connect(port);
  try {
    return (await client.reply()).code;
  } finally {
    client.destroy();
  }
}

describe('open-relay guard on the effective configuration', () => {
  it('refuses `serve --listen 0.0.0.0:PORT` over a loopback-only file without allowlist or auth (exit 78, reason and fix)', async () => {
    const file = path.join(dir, 'loopback.yaml');
    await writeConfig(file, relayConfigInput(emulator, path.join(dir, 'spool-1'), { graph: { caFile } }));
    const port = await freePort();
    // killIfStarted: should the guard fail, the relay listening on 0.0.0.0 is killed at once.
    const result = await runCli(['serve', '--config', file, '--listen', `0.0.0.0:${port}`], { timeoutMs: 20_000, killIfStarted: true });
    expect(result.code, result.output).toBe(78);
    expect(result.output).toContain(`--listen 0.0.0.0:${port}`);
    expect(result.output).toContain('open relay');
    expect(result.output).toContain('Fix: set smtp.allowedClients');
    expect(result.output).not.toContain('relay.started');
  });

  it('accepts the same override when the file restricts clients', async () => {
    const file = path.join(dir, 'allowlisted.yaml');
    await writeConfig(file, relayConfigInput(emulator, path.join(dir, 'spool-2'), { graph: { caFile }, smtp: { allowedClients: ['10.0.0.0/8'] } }));
    // 127.1 is 127.0.0.1 to the resolver but not a loopback literal to the guard (which then
    // treats it as exposed, as it would 0.0.0.0) - a stand-in that never opens a public port.
    const port = await freePort();
    const relay = await spawnRelay(['serve', '--config', file, '--listen', `127.1:${port}`]);
    try {
      expect(relay.port).toBe(port);
      expect(await greeting(port)).toBe(554);
    } finally {
      relay.child.kill('SIGTERM');
      await relay.exited;
    }
  });

  it('a SIGHUP that drops allowedClients while a non-loopback listener runs is refused; the running policy stays', async () => {
    const file = path.join(dir, 'reload.yaml');
    const port = await freePort();
    const base = relayConfigInput(emulator, path.join(dir, 'spool-3'), { graph: { caFile }, smtp: { listen: `127.1:${port}`, allowedClients: ['10.0.0.0/8'] } });
    await writeConfig(file, base);
    const relay = await spawnRelay(['serve', '--config', file]);
    try {
      expect(await greeting(relay.port)).toBe(554);
      // The new file looks harmless on its own (loopback, no allowlist), but the running listener
      // cannot move without a restart.
      await writeConfig(file, { ...base, smtp: { listen: '127.0.0.1:0', hostname: 'relay.test' } });
      relay.child.kill('SIGHUP');
      await until(() => relay.output().includes('reload refused'), 15_000, relay.output);
      expect(relay.output()).toContain('the running listeners stay bound until a restart');
      expect(relay.output()).toContain('open relay');
      expect(relay.output()).not.toContain('"event":"config.reloaded"');
      expect(await greeting(relay.port)).toBe(554);
    } finally {
      relay.child.kill('SIGTERM');
      await relay.exited;
    }
  });
});
