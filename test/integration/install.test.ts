/**
 * From nothing to running, as a newcomer does it: `npm pack` builds the package (prepack), the
 * tarball installs into an empty prefix, and the installed command answers --version and --help and
 * delivers a demo message. The pack runs in a copy of the source tree, because prepack rebuilds
 * dist/ and the other test files run dist/main.js at the same time.
 */
import { execFile, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/wait.js';

const run = promisify(execFile);

/**
 * npm in its own process group, killed whole (npm, the prepack script, tsc) when it overruns:
 * execFile's timeout would kill npm alone and leave tsc writing into the temp folder.
 */
function npm(args: string[], cwd: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', args, { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`npm ${args.join(' ')} ended with ${code ?? signal} after at most ${timeoutMs} ms:\n${err}`));
    });
  });
}
const root = path.resolve(__dirname, '../..');
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-install-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true, maxRetries: 5 });
});

/** The files a fresh clone has that packing reads (not node_modules, dist, tests or the benchmark). */
const SOURCE = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src', 'relay.example.yaml', 'config.schema.json', 'systemd', 'README.md', 'CHANGELOG.md', 'LICENSE'];

describe('install from the packed tarball', () => {
  it('packs a complete package that installs into an empty prefix and runs --version, --help and a demo send', async () => {
    const clone = path.join(dir, 'clone');
    await mkdir(clone);
    for (const name of SOURCE) await cp(path.join(root, name), path.join(clone, name), { recursive: true });
    // Only the compiler is needed to pack; the clone borrows the worktree's installed modules.
    await symlink(path.join(root, 'node_modules'), path.join(clone, 'node_modules'), 'dir');
    // Generous limits: this runs beside the rest of the suite on a 2-core machine (tsc alone takes ~30 s under load).
    const packed = await npm(['pack', '--json', '--pack-destination', dir], clone, 300_000);
    const [info] = JSON.parse(packed.slice(packed.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info!.files.map((f) => f.path);
    expect(files).toContain('dist/main.js');
    expect(files).toContain('dist/emulator/server.js');
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'CHANGELOG.md', 'README.md', 'relay.example.yaml', 'systemd/smtp-graph-relay.service']));
    expect(files.some((f) => f.startsWith('src/') || f.startsWith('test/'))).toBe(false);

    const prefix = path.join(dir, 'prefix');
    await mkdir(prefix);
    // --prefer-offline: npm ci has just filled the cache with these very versions.
    await npm(['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', path.join(dir, info!.filename)], dir, 300_000);
    const bin = path.join(prefix, 'bin', 'smtp-graph-relay');
    const env = { ...process.env, RELAY_CONFIG: '', PATH: `${path.join(prefix, 'bin')}:${process.env.PATH ?? ''}` };
    const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { version: string };
    expect((await run(bin, ['--version'], { env, cwd: dir, timeout: 60_000 })).stdout.trim()).toBe(pkg.version);
    expect((await run(bin, ['--help'], { env, cwd: dir, timeout: 60_000 })).stdout).toContain('Commands:');
    expect((await run(bin, ['setup', '--help'], { env, cwd: dir, timeout: 60_000 })).stdout).toContain('--no-browser');

    const demoDir = path.join(dir, 'demo');
    const child = spawn(bin, ['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--dir', demoDir], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    try {
      await until(() => /SMTP\s+127\.0\.0\.1:\d+/.test(out), 60_000, () => out);
      const port = Number(/SMTP\s+127\.0\.0\.1:(\d+)/.exec(out)![1]);
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
      await transport.sendMail({ from: 'scanner@contoso.example', to: 'someone@example.org', subject: 'installed', text: 'from the packed tarball' });
      transport.close();
      const delivered = path.join(demoDir, 'delivered');
      await until(async () => (await readdir(delivered).catch(() => [])).some((f) => f.endsWith('.eml')), 20_000, () => out);
    } finally {
      clearTimeout(killer);
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 900_000);
});
