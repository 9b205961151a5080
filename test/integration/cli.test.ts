/** The command line as an operator meets it: exit codes, error reports, --print-config. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runProcess } from '../helpers/processes.js';
import { MAIN } from '../helpers/relay-process.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Each of these commands fails fast: 15 s (a test's is 60 s) covers a cold start under load. */
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runProcess(process.execPath, [MAIN, ...args], { timeoutMs: 15_000, waitingFor: `the CLI to exit (${args[0] ?? ''})`, env: { RELAY_CONFIG: '', ...env } });

describe('command line', () => {
  it('exits 78 on an invalid config, listing every problem, never echoing the secret', async () => {
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, 'smtp:\n  listen: nope\n  colour: blue\ngraph:\n  clientId: c\n  auth:\n    method: clientSecret\n    clientSecret: 12345\n');
    const result = await cli(['serve', '--config', file]);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('smtp.listen: expected "host:port"');
    expect(result.stderr).toContain('smtp.colour: unknown key');
    expect(result.stderr).toContain('graph.tenantId: required');
    expect(result.stderr).toContain('graph.auth.clientSecret: invalid value (not shown: secret)');
    expect(result.stderr).not.toContain('12345');
  });

  it('names a missing environment variable', async () => {
    const file = path.join(dir, 'env.yaml');
    await writeFile(file, 'graph:\n  tenantId: t\n  clientId: c\n  auth: { method: clientSecret, clientSecret: "${NOT_SET_ANYWHERE}" }\n  mailbox: m@x.example\n');
    const result = await cli(['serve', '--config', file]);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('environment variable NOT_SET_ANYWHERE is not set');
  });

  it('prints the effective config with defaults and the secret redacted', async () => {
    const file = path.join(dir, 'good.yaml');
    await writeFile(file, 'graph:\n  tenantId: t\n  clientId: c\n  auth: { method: clientSecret, clientSecret: "${SECRET}" }\n  mailbox: m@x.example\n');
    const result = await cli(['serve', '--config', file, '--print-config'], { SECRET: 'very-secret-value' });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('clientSecret: "[redacted]"');
    expect(result.stdout).toContain('maxQueueLifetime: 432000000');
    expect(result.stdout).not.toContain('very-secret-value');
  });

  it('reports an unreadable config file and an unknown command clearly', async () => {
    const missing = await cli(['serve', '--config', path.join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toMatch(/cannot read the file \(ENOENT\)/);
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
  });
});
