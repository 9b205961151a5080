/**
 * Issue 11 item 14 with the real CLI: configuration edge cases exit 78 (do not restart) with a
 * message, never 1 (crash, restart) - and ${VAR} works for numbers and booleans.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aliasBomb } from '../helpers/alias-bomb.js';
import { runCli } from '../helpers/cli-run.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-cfg-edge-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const graph = (secret: string) => `graph:\n  tenantId: t\n  clientId: c\n  auth: { method: clientSecret, clientSecret: "${secret}" }\n  mailbox: relay@contoso.example\nspool:\n  dir: ${JSON.stringify(path.join(dir, 'spool'))}\n`;

async function serve(name: string, text: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []) {
  const file = path.join(dir, name);
  await writeFile(file, text);
  return runCli(['serve', '--config', file, ...extra], { env, timeoutMs: 20_000, killIfStarted: true });
}

describe('configuration edge cases at the command line', () => {
  it('a YAML alias bomb exits 78 with a message', async () => {
    const result = await serve('bomb.yaml', `${graph('${SECRET}')}${aliasBomb()}`, { SECRET: 's' });
    expect(result.code, result.output).toBe(78);
    expect(result.output).toContain('YAML could not be read: Excessive alias count');
  });

  it('`${ VAR }` exits 78 naming it', async () => {
    const result = await serve('spaced.yaml', graph('${ GRAPH_SECRET }'), { GRAPH_SECRET: 'secret-value-never-shown' });
    expect(result.code, result.output).toBe(78);
    expect(result.output).toContain('"${ GRAPH_SECRET }" is not a valid environment reference: write ${GRAPH_SECRET}');
    expect(result.output).not.toContain('secret-value-never-shown');
  });

  it('`maxConnections: ${MAX_CONN}` and a boolean from the environment are used as typed values', async () => {
    const text = `${graph('${SECRET}')}smtp:\n  maxConnections: \${MAX_CONN}\n  auth:\n    allowInsecure: \${ALLOW_INSECURE}\n`;
    const printed = await serve('typed.yaml', text, { SECRET: 's', MAX_CONN: '7', ALLOW_INSECURE: 'true' }, ['--print-config']);
    expect(printed.code, printed.output).toBe(0);
    expect(printed.output).toMatch(/\n {2}maxConnections: 7\n/);
    expect(printed.output).toMatch(/\n {4}allowInsecure: true\n/);
    const wrong = await serve('typed.yaml', text, { SECRET: 's', MAX_CONN: 'many', ALLOW_INSECURE: 'true' }, ['--print-config']);
    expect(wrong.code, wrong.output).toBe(78);
    expect(wrong.output).toContain('smtp.maxConnections: Invalid input: expected number, received string (the value of ${MAX_CONN})');
  });
});
