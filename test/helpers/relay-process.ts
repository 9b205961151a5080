/**
 * Runs the built relay (dist/main.js) as a separate process, the way systemd or Docker would, for
 * tests that kill it. Requires `npm run build` (npm test does it first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';

export const MAIN = path.resolve(__dirname, '../../dist/main.js');

export interface RelayProcess {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
}

export async function writeConfig(file: string, config: Record<string, unknown>): Promise<void> {
  await writeFile(file, stringify(config));
}

export async function spawnRelay(args: string[], env: NodeJS.ProcessEnv = {}, startTimeoutMs = 15_000): Promise<RelayProcess> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start within ${startTimeoutMs / 1000} s:\n${out}`)), startTimeoutMs);
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
  return { child, port, output: () => out, exited };
}
