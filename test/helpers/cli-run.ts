/**
 * Runs the built CLI (dist/main.js) as a real process that is expected to exit by itself (a refused
 * start, a queue command). Its own timeout kills it; so does `finally`, whatever happened.
 */
import { spawn } from 'node:child_process';
import { MAIN } from './relay-process.js';

export interface CliResult {
  /** The exit code; 'timeout' or 'started' when the process had to be killed. */
  code: number | null | 'timeout' | 'started';
  output: string;
}

/** With killIfStarted, a relay that starts when it should have been refused is killed at once (code 'started'). */
export async function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; killIfStarted?: boolean } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, RELAY_CONFIG: '', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await new Promise<CliResult['code']>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), options.timeoutMs ?? 15_000);
      if (options.killIfStarted) child.stdout.on('data', () => output.includes('"event":"relay.started"') && resolve('started'));
      child.on('exit', (exitCode) => resolve(exitCode));
    });
    return { code, output };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
}
