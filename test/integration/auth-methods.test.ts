/**
 * Every graph.auth.method delivers mail through the emulator, including token renewal after
 * expiry, and the device-code login run from a separate process followed by service restarts.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClientCertificate } from '../../src/emulator/test-pki.js';
import { CLIENT_ID, MAILBOX, relayConfigInput, startHarness, startTestEmulator, waitForDelivery, type Harness } from '../helpers/harness.js';
import { MAIN, writeConfig } from '../helpers/relay-process.js';
import { killGroup, spawnGroup } from '../helpers/processes.js';
import { until as waitUntil } from '../helpers/wait.js';

let dir: string;
let h: Harness | undefined;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-auth-'));
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function send(harness: Harness, testId: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: harness.port, secure: false, ignoreTLS: true });
  await transport.sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: testId, text: 'x', headers: { 'X-Test-Id': testId } });
}

describe('authorisation methods', () => {
  it('clientSecret: app-only token, renewed by MSAL once it nears expiry', async () => {
    h = await startHarness();
    // MSAL renews 300 s before expires_on (graph-api-facts §5.3), in whole seconds: a 301 s token is stale within 2 s.
    h.emulator.identity.tokenLifetimeSeconds = 301;
    await send(h, 'secret-1');
    await waitForDelivery(h.emulator, 'secret-1');
    await new Promise((r) => setTimeout(r, 2100));
    await send(h, 'secret-2');
    const second = await waitForDelivery(h.emulator, 'secret-2');
    expect(h.emulator.identity.grants.get('client_credentials')).toBe(2);
    expect(second.sentBy).toBe(CLIENT_ID);
  });

  it('certificate: a client assertion signed with the private key, verified against the uploaded certificate', async () => {
    const { certPem, keyPem } = await createClientCertificate();
    await writeFile(path.join(dir, 'app.crt'), certPem);
    await writeFile(path.join(dir, 'app.key'), keyPem, { mode: 0o600 });
    h = await startHarness({
      emulator: { apps: [{ clientId: CLIENT_ID, tenantId: 'test-tenant', secrets: [], certificates: [certPem], roles: ['Mail.Send'] }] },
      config: { graph: { auth: { method: 'certificate', certificateFile: path.join(dir, 'app.crt'), privateKeyFile: path.join(dir, 'app.key') } } },
    });
    await send(h, 'cert-1');
    await waitForDelivery(h.emulator, 'cert-1');
    expect(h.emulator.identity.grants.get('client_credentials')).toBe(1);
  });

  it('federated: the assertion file is read at each acquisition, so a rotated token is picked up', async () => {
    const assertionFile = path.join(dir, 'azure-identity-token');
    await writeFile(assertionFile, 'workload-token-1\n');
    h = await startHarness({
      emulator: { apps: [{ clientId: CLIENT_ID, tenantId: 'test-tenant', secrets: [], federatedAssertions: ['workload-token-1', 'workload-token-2'], roles: ['Mail.Send'] }] },
      config: { graph: { auth: { method: 'federated', assertionFile } } },
    });
    h.emulator.identity.tokenLifetimeSeconds = 301;
    await send(h, 'fed-1');
    await waitForDelivery(h.emulator, 'fed-1');
    // Rotation: the old assertion stops working, the file has the new one.
    h.emulator.identity.apps.get(CLIENT_ID)!.federatedAssertions = ['workload-token-2'];
    await writeFile(assertionFile, 'workload-token-2\n');
    await new Promise((r) => setTimeout(r, 2100));
    await send(h, 'fed-2');
    await waitForDelivery(h.emulator, 'fed-2');
    expect(h.emulator.identity.grants.get('client_credentials')).toBe(2);
  });

  it('password: the RMM-style registration (delegated Mail.Send, public client) works unchanged and refreshes', async () => {
    h = await startHarness({
      emulator: {
        apps: [{ clientId: CLIENT_ID, tenantId: 'test-tenant', secrets: [], roles: [], publicClient: true, delegatedScopes: ['Mail.Send'] }],
        users: [{ username: MAILBOX, password: 'Winter2026!' }],
      },
      config: { graph: { auth: { method: 'password', username: MAILBOX, password: 'Winter2026!' } } },
    });
    h.emulator.identity.tokenLifetimeSeconds = 301;
    await send(h, 'ropc-1');
    const first = await waitForDelivery(h.emulator, 'ropc-1');
    expect(first.sentBy).toBe(MAILBOX);
    await new Promise((r) => setTimeout(r, 2100));
    await send(h, 'ropc-2');
    await waitForDelivery(h.emulator, 'ropc-2');
    expect(h.emulator.identity.grants.get('password')).toBe(1);
    expect(h.emulator.identity.grants.get('refresh_token')).toBe(1);
  });

  it('deviceCode: `login` in a separate process stores an encrypted 0600 cache; the service delivers across restarts', async () => {
    const emulator = await startTestEmulator({ apps: [{ clientId: CLIENT_ID, tenantId: 'test-tenant', secrets: [], roles: [], publicClient: true, delegatedScopes: ['Mail.Send'] }] });
    try {
      const caFile = path.join(dir, 'ca.pem');
      await writeFile(caFile, emulator.caPem);
      const cacheFile = path.join(dir, 'token-cache.json');
      const auth = { method: 'deviceCode', tokenCacheFile: cacheFile, tokenCacheKey: '${TOKEN_CACHE_KEY}' };
      const configInput = relayConfigInput(emulator, path.join(dir, 'dc-spool'), { graph: { auth, caFile } });
      const configFile = path.join(dir, 'device.yaml');
      await writeConfig(configFile, configInput);

      // Own process group and deadlines (15 s each, the test has 60 s), killed in finally (issue 16).
      const login = spawnGroup(process.execPath, [MAIN, 'login', '--config', configFile], { env: { TOKEN_CACHE_KEY: 'k3y-from-env' } });
      let out = '';
      try {
        login.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        login.stderr?.on('data', (d: Buffer) => (out += d.toString()));
        const exited = new Promise<number | null>((resolve) => login.on('exit', resolve));
        let code: string | undefined;
        await waitUntil(() => (code = /enter the code (\w+)/.exec(out)?.[1]) !== undefined, 15_000, () => `waiting for \`login\` to print a device code; its output:\n${out}`);
        expect(out).toContain(`${emulator.url}/devicelogin`);
        expect(emulator.identity.approveDeviceCode(code as string, MAILBOX)).toBe(true);
        let exitCode: number | null | undefined;
        void exited.then((c) => (exitCode = c));
        await waitUntil(() => exitCode !== undefined, 15_000, () => `waiting for \`login\` to exit after the code was approved; its output:\n${out}`);
        expect(exitCode, out).toBe(0);
        expect(out).toContain(`signed in as ${MAILBOX}`);
      } finally {
        killGroup(login.pid);
      }
      expect((await stat(cacheFile)).mode & 0o777).toBe(0o600);
      const cacheText = await readFile(cacheFile, 'utf8');
      expect(JSON.parse(cacheText)).toMatchObject({ alg: 'aes-256-gcm' });
      expect(cacheText).not.toMatch(/refresh|RefreshToken/i);

      const { validateConfig } = await import('../../src/config/load.js');
      const { startRelay } = await import('../../src/app.js');
      const { captureLogger } = await import('../helpers/harness.js');
      const config = validateConfig(configInput, { TOKEN_CACHE_KEY: 'k3y-from-env' }, 'test');
      for (const round of [1, 2]) {
        const logs = captureLogger();
        const relay = await startRelay({ config, logger: logs.logger });
        const port = relay.smtp.addresses[0]?.port as number;
        await nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true }).sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'dc', text: 'x', headers: { 'X-Test-Id': `device-${round}` } });
        const delivered = await waitForDelivery(emulator, `device-${round}`);
        expect(delivered.sentBy).toBe(MAILBOX);
        await relay.stop(1000);
        emulator.identity.expireAllAccessTokens(); // the restarted service must renew with the refresh token
      }
      expect(emulator.identity.grants.get('device_code')).toBe(1);
      expect(emulator.identity.grants.get('refresh_token')).toBeGreaterThanOrEqual(1);

      // A dead refresh token: deliveries wait and the log says "login required".
      emulator.identity.revokeRefreshTokens();
      emulator.identity.expireAllAccessTokens();
      const logs = captureLogger();
      const relay = await startRelay({ config, logger: logs.logger });
      await nodemailer.createTransport({ host: '127.0.0.1', port: relay.smtp.addresses[0]?.port as number, secure: false, ignoreTLS: true }).sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'dc', text: 'x' });
      const until = Date.now() + 5000;
      while (!logs.records.some((r) => r.event === 'delivery.deferred') && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(logs.records.find((r) => r.event === 'delivery.deferred')).toMatchObject({ operatorActionRequired: true, reason: expect.stringContaining('login required') });
      const readiness = await relay.readiness();
      expect(readiness.ready).toBe(false);
      expect(readiness.checks.token?.detail).toContain('login required');
      await relay.stop(1000);
    } finally {
      await emulator.close();
    }
  });
});
