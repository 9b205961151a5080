/** The command line as a newcomer meets it: help per command, typos, the password prompt, health. */
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN } from '../helpers/relay-process.js';
import { COMMANDS, parseCommandLine } from '../../src/cli/commands.js';
import { verifyPassword } from '../../src/smtp/local-auth.js';

const run = promisify(execFile);
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-cli-help-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[], input?: string) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, RELAY_CONFIG: '' }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input ?? '');
  });
}

describe('help and options', () => {
  // Every command's help is checked in-process (parseCommandLine is what main.ts runs); one real
  // process shows the wiring, without starting eight node processes on a loaded CI machine.
  it.each(Object.keys(COMMANDS))('prints the options and an example for "%s --help"', (command) => {
    const parsed = parseCommandLine([command, '--help']);
    expect(parsed.kind).toBe('help');
    const text = parsed.kind === 'help' ? parsed.text : '';
    expect(text).toContain(`Usage:\n  smtp-graph-relay ${command === 'serve' ? '[serve]' : command}`);
    expect(text).toContain('Example');
    for (const option of Object.keys(COMMANDS[command]!.options)) expect(text).toContain(`--${option}`);
  });

  it('prints a command\'s help from the real command line', async () => {
    const { code, stdout } = await cli(['queue', '--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('--older-than DURATION');
    expect(stdout).toContain('smtp-graph-relay queue list --deferred --config relay.yaml');
  });

  it('names the closest option for a typo, and the command an option belongs to', async () => {
    const typo = await cli(['check', '--conifg', 'relay.yaml']);
    expect(typo.code).toBe(64);
    expect(typo.stderr).toContain('check: unknown option --conifg - did you mean --config?');
    const elsewhere = await cli(['serve', '--send-to', 'a@b.example']);
    expect(elsewhere.stderr).toContain('that option belongs to "check"');
    const command = await cli(['chek']);
    expect(command.stderr).toContain('did you mean "check"?');
  });

  it('prints the package version', async () => {
    const { stdout } = await cli(['--version']);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('hash-password', () => {
  it('reads a piped password (scripts)', async () => {
    const { code, stdout } = await cli(['hash-password'], 'piped-secret\n');
    expect(code).toBe(0);
    expect(await verifyPassword('piped-secret', stdout.trim())).toBe(true);
  });

  // A real terminal: python's pty module gives the process a TTY, as a person at a shell has.
  it('asks twice on a terminal without echoing the password', async () => {
    const script = `
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], sys.argv[2], 'hash-password'])
out = b''
def until(marker):
    global out
    deadline = time.time() + 45
    while marker not in out and time.time() < deadline:
        try:
            out += os.read(fd, 1024)
        except OSError:
            break
until(b'Password:')
os.write(fd, b'tty-secret-42\\r')
until(b'Again:')
os.write(fd, b'tty-secret-42\\r')
until(b'$scrypt$')
time.sleep(0.3)
try:
    out += os.read(fd, 4096)
except OSError:
    pass
sys.stdout.write(out.decode('utf8', 'replace'))
`;
    const { stdout } = await run('python3', ['-c', script, process.execPath, MAIN], { timeout: 60_000 });
    expect(stdout).toContain('Password:');
    expect(stdout).toContain('Again:');
    expect(stdout).not.toContain('tty-secret-42');
    const hash = /\$scrypt\$\S+/.exec(stdout)?.[0] ?? '';
    expect(await verifyPassword('tty-secret-42', hash)).toBe(true);
  });
});

describe('health', () => {
  it('asks the admin listener the configuration names, and fails when nothing answers there', async () => {
    const server = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404).end('{"status":"ok"}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const file = path.join(dir, 'health.yaml');
      await writeFile(file, `graph:\n  tenantId: t\n  clientId: c\n  auth: { method: clientSecret, clientSecret: x }\nadmin:\n  listen: "127.0.0.1:${port}"\n`);
      const ok = await cli(['health', '--config', file]);
      expect(ok.stdout).toContain(`http://127.0.0.1:${port}/healthz 200`);
      expect(ok.code).toBe(0);
    } finally {
      await new Promise((r) => server.close(r));
    }
    const file = path.join(dir, 'health-down.yaml');
    await writeFile(file, `graph:\n  tenantId: t\n  clientId: c\n  auth: { method: clientSecret, clientSecret: x }\nadmin:\n  listen: "127.0.0.1:${port}"\n`);
    const down = await cli(['health', '--config', file]);
    expect(down.code).toBe(1);
    expect(down.stdout).toContain('not ok');
  });
});
