/**
 * Runs the built relay (dist/main.js) as a separate process, the way systemd or Docker would, for
 * tests that kill it. Requires `npm run build` (npm test does it first). The relay runs in its own
 * process group (test/helpers/processes.ts): `stop()` in a test's `finally` always ends it.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { killGroup, spawnGroup } from './processes.js';

export const MAIN = path.resolve(__dirname, '../../dist/main.js');

export interface RelayProcess {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
  /**
   * Sends `signal` (SIGTERM: a graceful stop) and waits up to `ms` for the exit; past that, or for
   * SIGKILL, kills the whole process group. Resolves with the exit code (null: killed by a signal).
   */
  stop: (signal?: NodeJS.Signals, ms?: number) => Promise<number | null>;
}

export async function writeConfig(file: string, config: Record<string, unknown>): Promise<void> {
  await writeFile(file, stringify(config));
}

/** Starts the relay and resolves once it logged relay.started (within `startMs`), with its first SMTP port. */
export async function spawnRelay(args: string[], env: NodeJS.ProcessEnv = {}, startMs = 15_000): Promise<RelayProcess> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  const child = spawnGroup(process.execPath, [MAIN, ...args], { env });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', ms = 10_000): Promise<number | null> => {
    if (exitCode !== undefined) {
      killGroup(child.pid);
      return exitCode;
    }
    if (signal === 'SIGKILL') killGroup(child.pid);
    else child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]);
    clearTimeout(timer);
    killGroup(child.pid);
    if (code === 'timeout') {
      process.stderr.write(`relay (pid ${child.pid}) did not exit within ${ms} ms of ${signal}: its process group was killed\n`);
      return exited;
    }
    return code;
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${startMs} ms waiting for the relay to log relay.started (${args.join(' ')}):\n${out}`)), startMs);
      const check = () => {
        const match = /"event":"relay.started","listen":\["[^"]*:(\d+)"/.exec(out);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      };
      child.stdout?.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`relay exited with ${code} before starting:\n${out}`));
      });
    });
    return { child, port, output: () => out, exited, stop };
  } catch (err) {
    killGroup(child.pid);
    throw err;
  }
}
