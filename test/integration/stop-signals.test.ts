/**
 * What a repeated SIGTERM does to a real relay process: the same stop delivered twice at once (a
 * process-group kill that also reaches it through `npm start`'s forwarding) still drains; a second
 * one later forces the exit, and the message whose answer it did not wait for is sent again after
 * a restart (at least once, never lost).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { relayConfigInput, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { spawnRelay, writeConfig } from '../helpers/relay-process.js';
import { until } from '../helpers/wait.js';

let emulator: RunningEmulator;
let dir: string;
let configFile: string;
beforeAll(async () => {
  emulator = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-signals-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
  configFile = path.join(dir, 'relay.yaml');
  await writeConfig(configFile, { ...relayConfigInput(emulator, path.join(dir, 'spool'), { graph: { caFile } }), log: { level: 'info' } });
});
afterAll(async () => {
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

async function send(port: number, testId: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ from: 'rmm@contoso.example', to: 'ops@contoso.example', subject: testId, text: 'alert', headers: { 'X-Test-Id': testId } });
  } finally {
    transport.close();
  }
}

const copiesOf = (testId: string) => emulator.mail.delivered.filter((m) => new RegExp(`^X-Test-Id: ${testId}\r$`, 'im').test(m.mime?.toString('latin1') ?? '')).length;

describe('stop signals', () => {
  it('a SIGTERM that arrives twice at once is one stop: the request under way is answered, then the relay exits 0', async () => {
    emulator.mail.latencyMs = 1500;
    const relay = await spawnRelay(['serve', '--config', configFile]);
    try {
      await send(relay.port, 'twice-at-once');
      await waitForDelivery(emulator, 'twice-at-once'); // taken by Graph; its answer is 1.5 s away
      relay.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 20));
      relay.child.kill('SIGTERM');
      expect(await relay.exited).toBe(0);
      const out = relay.output();
      expect(out).not.toContain('exiting now');
      expect(out).toMatch(/"event":"relay.stopped"[^\n]*"unfinishedAttempts":0/);
      expect(out.indexOf('"event":"delivery.delivered"')).toBeGreaterThan(-1);
      expect(out.indexOf('"event":"delivery.delivered"')).toBeLessThan(out.indexOf('"event":"relay.stopped"'));
    } finally {
      await relay.stop('SIGKILL');
      emulator.mail.latencyMs = 0;
    }
  }, 30_000);

  it('a second SIGTERM two seconds later ends the relay at once; the unanswered message is sent again after a restart', async () => {
    emulator.mail.latencyMs = 8000;
    const relay = await spawnRelay(['serve', '--config', configFile]);
    try {
      await send(relay.port, 'asked-again');
      await waitForDelivery(emulator, 'asked-again');
      relay.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 2000)); // well past the 1 s window, even on a loaded machine
      const forcedAt = Date.now();
      relay.child.kill('SIGTERM');
      expect(await relay.exited).toBe(1);
      expect(Date.now() - forcedAt).toBeLessThan(3000); // not the 8 s answer, not the 10 s drain
      expect(relay.output()).toContain('second SIGTERM: exiting now; anything not delivered stays in the spool');
    } finally {
      await relay.stop('SIGKILL');
      emulator.mail.latencyMs = 0;
    }
    const restarted = await spawnRelay(['serve', '--config', configFile]);
    try {
      await until(() => copiesOf('asked-again') === 2, 15_000, () => `copies at Graph: ${copiesOf('asked-again')}`);
    } finally {
      await restarted.stop();
    }
  }, 45_000);
});
