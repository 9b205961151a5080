/**
 * Child processes for tests that fail fast and clean (issue 16, item 3): every process runs in its
 * own process group (detached), has its own deadline shorter than the test's, and is killed with
 * its whole group when the deadline passes, in the test's `finally`, and - as a last resort - when
 * the test worker exits. A deadline names what the test was waiting for and shows the output.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const live = new Set<number>();

/** SIGKILL to the process group led by `pid` (every process it started, too); quiet if already gone. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
  if (signal === 'SIGKILL') live.delete(pid);
}

// A worker that ends (a vitest timeout abandons the test's promise, then the file ends) takes
// every group still running with it, so no relay is left listening after the suite.
process.on('exit', () => {
  for (const pid of [...live]) killGroup(pid);
});

/** Spawns `command` as the leader of a new process group that killGroup and the exit hook can end. */
export function spawnGroup(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  const child = spawn(command, args, { env: { ...process.env, ...options.env }, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (child.pid !== undefined) {
    live.add(child.pid);
    const pid = child.pid;
    child.on('exit', () => live.delete(pid));
  }
  return child;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** The process's own deadline; keep it below the test's timeout (vitest's default here is 60 s). */
  timeoutMs: number;
  /** What the test waits for, named in the error when the deadline passes ("the CLI to exit 78 ..."). */
  waitingFor: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw unless the exit code is 0 (execFile's behaviour), with the output in the message. */
  check?: boolean;
}

const tail = (text: string, max = 4000) => (text.length > max ? `...${text.slice(-max)}` : text);

/** Runs a command to completion within `timeoutMs`; its process group is killed whatever happens. */
export async function runProcess(command: string, args: string[], options: RunOptions): Promise<RunResult> {
  const child = spawnGroup(command, args, options);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await new Promise<RunResult>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.waitingFor} (${command} ${args.join(' ')}); its process group was killed.\nstdout:\n${tail(stdout)}\nstderr:\n${tail(stderr)}`)), options.timeoutMs);
      child.on('error', reject);
      // 'close', not 'exit': the output pipes are drained by then.
      child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    if (options.check && result.code !== 0) throw new Error(`${command} exited with ${result.code ?? result.signal} while the test waited for ${options.waitingFor}\nstdout:\n${tail(stdout)}\nstderr:\n${tail(stderr)}`);
    return result;
  } finally {
    clearTimeout(timer);
    killGroup(child.pid); // also ends anything the process left running (a script's background relay)
  }
}
