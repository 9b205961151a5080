/**
 * One spool, one relay (issue 11, item 8), with real relay processes: a second relay on the same
 * spool.dir exits naming the PID that holds it; offline queue commands leave a running relay's
 * spool alone (a message in DATA keeps its tmp/ file); a relay killed with SIGKILL leaves no lock
 * that stops the next start.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { relayConfigInput, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { MAIN, spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let emulator: RunningEmulator;
let dir: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-lock-'));
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI to its end (killed after 15 s, well inside the test's timeout). */
function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`smtp-graph-relay ${args.join(' ')} did not end within 15 s:\n${output}`));
    }, 15_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

async function stopProcess(relay: RelayProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!relay || relay.child.exitCode !== null || relay.child.signalCode !== null) return;
  relay.child.kill(signal);
  const timer = setTimeout(() => relay.child.kill('SIGKILL'), 10_000);
  await relay.exited;
  clearTimeout(timer);
}

describe('one spool, one relay', () => {
  it('refuses a second relay and offline queue commands on a held spool, and takes over the lock of a killed one', async () => {
    const spoolDir = path.join(dir, 'spool');
    const configFile = path.join(dir, 'relay.yaml');
    const caFile = path.join(dir, 'emulator-ca.pem');
    await writeFile(caFile, emulator.caPem);
    // admin.listen off: the case where the queue CLI falls back to the spool files.
    await writeConfig(configFile, { ...relayConfigInput(emulator, spoolDir), admin: { listen: false }, log: { level: 'info' } });
    const env = { NODE_EXTRA_CA_CERTS: caFile };

    let first: RelayProcess | undefined;
    let third: RelayProcess | undefined;
    let client: RawSmtpClient | undefined;
    try {
      first = await spawnRelay(['serve', '--config', configFile], env);
      const firstPid = first.child.pid as number;

      // A second relay on the same spool.dir: exits at once, naming the holder, touching nothing.
      const second = await runCli(['serve', '--config', configFile], env);
      expect(second.code).toBe(1);
      expect(second.output).toContain(`spool.dir ${spoolDir} is in use by another relay (PID ${firstPid})`);
      expect(second.output).not.toContain('relay.started');

      // A message in DATA, large enough to be written to tmp/ (above the 256 KiB journal limit).
      client = await RawSmtpClient.connect(first.port);
      await client.reply();
      await client.command('EHLO sender.test');
      expect((await client.command('MAIL FROM:<scanner@contoso.example>')).code).toBe(250);
      expect((await client.command('RCPT TO:<ops@contoso.example>')).code).toBe(250);
      expect((await client.command('DATA')).code).toBe(354);
      client.write(`Subject: in DATA while the queue CLI runs\r\nX-Test-Id: lock-1\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(400));
      const tmp = path.join(spoolDir, 'tmp');
      const deadline = Date.now() + 10_000;
      while ((await readdir(tmp)).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const inData = await readdir(tmp);
      expect(inData).toHaveLength(1);

      // Offline queue commands refuse: neither a listing (which ran recovery and deleted tmp/)
      // nor a hold (which printed "held" and was lost) touches the running relay's spool.
      for (const args of [['list'], ['hold', '0000000000000000000']]) {
        const result = await runCli(['queue', ...args, '--config', configFile], env);
        expect(result.code).toBe(1);
        expect(result.output).toContain(`a running relay (PID ${firstPid}) holds spool.dir ${spoolDir} and its admin API is off (admin.listen: false)`);
      }
      expect(await readdir(tmp)).toEqual(inData);

      // The message in DATA still gets its 250 and is delivered, once.
      client.write('.\r\n');
      expect((await client.reply()).code).toBe(250);
      await client.quit();
      const delivered = () => emulator.mail.delivered.filter((m) => m.mime?.toString('latin1').includes('X-Test-Id: lock-1')).length;
      await waitForDelivery(emulator, 'lock-1', 20_000);
      expect(delivered()).toBe(1);
      // Graph has it once the emulator recorded it; the relay's own record of that follows its
      // answer. A kill in between is a crash after delivery, which sends again (at least once,
      // by design): wait for the relay to log the delivery, which it does once the spool has it.
      await until(() => first!.output().includes('"event":"delivery.delivered"'), 10_000, () => 'the relay never logged delivery.delivered');

      // Killed with SIGKILL, the relay releases nothing itself; the next start takes over.
      first.child.kill('SIGKILL');
      await first.exited;
      third = await spawnRelay(['serve', '--config', configFile], env);
      expect(third.output()).toMatch(new RegExp(`"event":"spool.lock_taken_over","previousPid":${firstPid}`));
      // After a clean stop there is nothing to take over.
      await stopProcess(third);
      third = await spawnRelay(['serve', '--config', configFile], env);
      expect(third.output()).not.toContain('spool.lock_taken_over');
      expect(delivered()).toBe(1);
    } finally {
      client?.destroy();
      await stopProcess(first, 'SIGKILL');
      await stopProcess(third);
    }
    // Six process starts: under a loaded CI machine each can take several seconds (each has its own 15 s limit).
  }, 120_000);
});
