/**
 * `smtp-graph-relay setup` in a real browser against the emulator: a wrong secret gets the AADSTS
 * diagnosis and its fix and nothing is written; the right one writes a 0600 file (comments kept,
 * secret in a 0600 env file) with which `serve` starts and delivers. The certificate method: swapped
 * files and an unregistered certificate are diagnosed, uploads are kept across a failed attempt, and
 * the stored certificate and key (0600) are what `serve` signs its client assertions with.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { createClientCertificate } from '../../src/emulator/test-pki.js';
import { parseEnvFile } from '../../src/setup/config-file.js';
import { runPageTests, launchBrowser, overflowsHorizontally, screenshots, type TestBrowser } from '../helpers/browser.js';
import { CLIENT_ID, CLIENT_SECRET, MAILBOX, startTestEmulator, TENANT, waitForDelivery } from '../helpers/harness.js';
import { MAIN, spawnRelay } from '../helpers/relay-process.js';
import { until } from '../helpers/wait.js';

let emu: RunningEmulator;
let dir: string;
let browser: TestBrowser;

beforeAll(async () => {
  emu = await startTestEmulator();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-setup-'));
  if (runPageTests) browser = await launchBrowser();
}, 90_000);
afterAll(async () => {
  await browser?.close();
  await emu?.close();
  await rm(dir, { recursive: true, force: true });
});

function startSetup(configFile: string): { child: ChildProcess; url: Promise<string>; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [MAIN, 'setup', '--config', configFile, '--no-open'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RELAY_CONFIG: '' } });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const url = until(() => /http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/.test(out), 60_000, () => out).then(() => /http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/.exec(out)![0]);
  return { child, url, output: () => out, exited };
}

describe.skipIf(!runPageTests)('setup page', () => {
  it('diagnoses a wrong secret, then saves a working configuration that serve delivers with', async () => {
    const caFile = path.join(dir, 'emulator-ca.pem');
    await writeFile(caFile, emu.caPem);
    const configFile = path.join(dir, 'relay.yaml');
    // An existing file with a person's comments, which setup must keep.
    await writeFile(
      configFile,
      `# Relay for the office scanners - ask Sam before changing\ngraph:\n  tenantId: old-tenant # from the old app\n  clientId: old-client\n  auth:\n    method: clientSecret\n    clientSecret: old\n  caFile: ${caFile}\ndelivery:\n  retry: { minDelay: 100ms, maxDelay: 500ms }\n  perMailbox: { messagesPerMinute: 0 }\nadmin:\n  listen: 127.0.0.1:0\n`,
    );
    const setup = startSetup(configFile);
    const killer = setTimeout(() => setup.child.kill('SIGKILL'), 120_000);
    try {
      const { page } = browser;
      await page.goto(await setup.url);
      expect(await page.locator('button[type=submit]').innerText()).toBe('Save and Test');
      expect(await page.inputValue('input[name="graph.tenantId"]')).toBe('old-tenant');
      // The secret is write-only: never sent back to the page.
      expect(await page.inputValue('input[name="graph.auth.clientSecret"]')).toBe('');
      expect(await page.content()).not.toContain('>old<');
      await screenshots(page, 'setup-form');
      expect(await overflowsHorizontally(page)).toBe(false);

      const fill = async (secret: string) => {
        await page.selectOption('select[name="graph.auth.method"]', 'clientSecret');
        await page.fill('input[name="graph.tenantId"]', TENANT);
        await page.fill('input[name="graph.clientId"]', CLIENT_ID);
        await page.fill('input[name="graph.auth.clientSecret"]', secret);
        await page.fill('input[name="graph.mailbox"]', MAILBOX);
        await page.fill('input[name="smtp.listen"]', '127.0.0.1:0');
        await page.fill('input[name="spool.dir"]', path.join(dir, 'spool'));
        await page.click('details summary');
        await page.fill('input[name="graph.authorityHost"]', emu.url);
        await page.fill('input[name="graph.endpoint"]', emu.url);
        await page.fill('input[name="check.sendTo"]', 'it@contoso.example');
      };
      await fill('wrong-secret');
      await page.click('button[type=submit]');
      const failure = page.locator('li.fail[data-stage="token"]');
      await failure.waitFor().catch(async (err: unknown) => {
        throw new Error(`${(err as Error).message}\n--- page ---\n${await page.innerText("body")}\n--- setup ---\n${setup.output()}`);
      });
      expect(await failure.innerText()).toContain('AADSTS7000215');
      expect(await failure.innerText()).toContain('the client secret is wrong');
      expect(await failure.innerText()).toContain('copy the secret *Value* (not the Secret ID)');
      // The page streams: the verdict comes once every stage has run.
      await page.locator('#not-saved').waitFor();
      await screenshots(page, 'setup-wrong-secret');
      // Nothing written: the old file is as it was.
      expect(await readFile(configFile, 'utf8')).toContain('clientSecret: old');

      await fill(CLIENT_SECRET);
      await page.check('input[name="secrets.envFile"]');
      await page.click('button[type=submit]');
      await page.locator('#saved').waitFor();
      const steps = await page.locator('ol.steps').first().innerText();
      expect(steps).toContain('token acquired');
      expect(steps).toContain('test message from relay@contoso.example accepted by Graph for it@contoso.example');
      expect(await page.innerText('main')).toContain('smtp-graph-relay serve --config');
      await screenshots(page, 'setup-saved');
      expect(await setup.exited).toBe(0);
    } finally {
      clearTimeout(killer);
      setup.child.kill('SIGKILL');
    }

    const written = await readFile(configFile, 'utf8');
    expect((await stat(configFile)).mode & 0o777).toBe(0o600);
    expect(written).toContain('# Relay for the office scanners - ask Sam before changing');
    expect(written).toContain(`tenantId: ${TENANT}`);
    expect(written).toContain('clientSecret: ${GRAPH_CLIENT_SECRET}');
    expect(written).not.toContain(CLIENT_SECRET);
    const envFile = path.join(dir, 'secrets.env');
    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    const env = parseEnvFile(await readFile(envFile, 'utf8'));
    expect(env.GRAPH_CLIENT_SECRET).toBe(CLIENT_SECRET);

    // 60 s to start: this runs beside the whole suite on a 2-core machine.
    const relay = await spawnRelay(['serve', '--config', configFile], env, 60_000);
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true });
      await transport.sendMail({ from: MAILBOX, to: 'it@contoso.example', subject: 'after setup', text: 'configured by the setup page', headers: { 'X-Test-Id': 'after-setup' } });
      transport.close();
      await waitForDelivery(emu, 'after-setup', 20_000);
    } finally {
      relay.child.kill('SIGTERM');
      await relay.exited;
    }
  }, 240_000);
});

describe('setup --no-browser', () => {
  it('asks the same questions in the terminal, diagnoses a wrong secret, and saves once the test passes', async () => {
    const caFile = path.join(dir, 'terminal-ca.pem');
    await writeFile(caFile, emu.caPem);
    const configFile = path.join(dir, 'terminal.yaml');
    await writeFile(configFile, `# kept\ngraph:\n  tenantId: x\n  clientId: x\n  auth: { method: clientSecret, clientSecret: x }\n  caFile: ${caFile}\n`);
    const answers = (secret: string) => ['1', TENANT, CLIENT_ID, secret, MAILBOX, '127.0.0.1:0', '', path.join(dir, 'terminal-spool'), 'global', emu.url, emu.url, 'n', ''];
    // First a wrong secret, then "yes, try again" with the right one: one session, answers piped in.
    const input = [...answers('wrong-secret'), 'y', ...answers(CLIENT_SECRET)].join('\n') + '\n';
    const child = spawn(process.execPath, [MAIN, 'setup', '--no-browser', '--config', configFile], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RELAY_CONFIG: '' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.end(input);
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(killer);
    expect(out).toContain('FAIL  token (AADSTS7000215): the client secret is wrong');
    expect(out).toContain('fix: copy the secret *Value* (not the Secret ID)');
    expect(out).toContain('ok    token acquired');
    expect(out).toContain(`Saved ${configFile} (mode 0600)`);
    expect(out).not.toContain(CLIENT_SECRET);
    expect(code).toBe(0);
    const written = await readFile(configFile, 'utf8');
    expect(written).toContain('# kept');
    expect(written).toContain(`clientSecret: ${CLIENT_SECRET}`);
    expect((await stat(configFile)).mode & 0o777).toBe(0o600);
  }, 90_000);
});

describe.skipIf(!runPageTests)('setup page, device code', () => {
  it('shows the code and the sign-in address in the page and finishes once the person has signed in', async () => {
    const dcEmu = await startTestEmulator({ apps: [{ clientId: 'public-app', tenantId: TENANT, secrets: [], roles: [], publicClient: true, delegatedScopes: ['Mail.Send'] }] });
    const caFile = path.join(dir, 'dc-ca.pem');
    await writeFile(caFile, dcEmu.caPem);
    const configFile = path.join(dir, 'device.yaml');
    await writeFile(configFile, `graph:\n  caFile: ${caFile}\n`);
    const setup = startSetup(configFile);
    const killer = setTimeout(() => setup.child.kill('SIGKILL'), 120_000);
    try {
      const { page } = browser;
      await page.goto(await setup.url);
      await page.selectOption('select[name="graph.auth.method"]', 'deviceCode');
      // Only the chosen method's fields are shown (CSS :has(), no script).
      expect(await page.isVisible('input[name="graph.auth.clientSecret"]')).toBe(false);
      expect(await page.isVisible('input[name="graph.auth.tokenCacheFile"]')).toBe(true);
      await page.fill('input[name="graph.tenantId"]', TENANT);
      await page.fill('input[name="graph.clientId"]', 'public-app');
      await page.fill('input[name="graph.mailbox"]', MAILBOX);
      await page.fill('input[name="graph.auth.tokenCacheFile"]', path.join(dir, 'dc-cache.json'));
      await page.fill('input[name="spool.dir"]', path.join(dir, 'dc-spool'));
      await page.click('details summary');
      await page.fill('input[name="graph.authorityHost"]', dcEmu.url);
      await page.fill('input[name="graph.endpoint"]', dcEmu.url);
      // The page streams: the click's navigation completes only when the sign-in has finished.
      void page.click('button[type=submit]').catch(() => undefined);
      const signin = page.locator('li[data-stage="signin"]').first();
      await signin.waitFor();
      const text = await signin.innerText();
      const code = /enter the code (\w+)/.exec(text)?.[1];
      expect(text).toContain(`${dcEmu.url}/devicelogin`);
      expect(await signin.locator('a').getAttribute('href')).toBe(`${dcEmu.url}/devicelogin`);
      await screenshots(page, 'setup-device-code');
      expect(dcEmu.identity.approveDeviceCode(code as string, MAILBOX)).toBe(true);
      await page.locator('#saved').waitFor();
      expect(await page.locator('ol.steps').first().innerText()).toContain(`signed in as ${MAILBOX}`);
      expect(await setup.exited).toBe(0);
      expect(await readFile(configFile, 'utf8')).toContain('method: deviceCode');
      expect((await stat(path.join(dir, 'dc-cache.json'))).mode & 0o777).toBe(0o600);
    } finally {
      clearTimeout(killer);
      setup.child.kill('SIGKILL');
      await dcEmu.close();
    }
  }, 120_000);
});

describe.skipIf(!runPageTests)('setup page, certificate', () => {
  it('uploads a certificate and its key, tests them against the app registration, and stores them 0600 for serve', async () => {
    const registered = await createClientCertificate('relay app (registered)');
    const other = await createClientCertificate('relay app (not registered)');
    // The app knows only the registered certificate (public part), as in Entra's Certificates & secrets.
    const certEmu = await startTestEmulator({
      apps: [{ clientId: CLIENT_ID, tenantId: TENANT, secrets: [], certificates: [registered.certPem], roles: ['Mail.Send', 'Mail.ReadWrite', 'User.Read.All'] }],
    });
    const certDir = await mkdtemp(path.join(dir, 'cert-'));
    const caFile = path.join(certDir, 'emulator-ca.pem');
    await writeFile(caFile, certEmu.caPem);
    const configFile = path.join(certDir, 'relay.yaml');
    await writeFile(configFile, `graph:\n  caFile: ${caFile}\ndelivery:\n  retry: { minDelay: 100ms, maxDelay: 500ms }\n  perMailbox: { messagesPerMinute: 0 }\nadmin:\n  listen: 127.0.0.1:0\n`);
    // What a person picks in the file dialog: files somewhere else, named as they came.
    const uploads = path.join(certDir, 'downloads');
    await mkdir(uploads);
    const files = {
      cert: path.join(uploads, 'relay-app.crt'),
      key: path.join(uploads, 'relay-app.key'),
      otherCert: path.join(uploads, 'other.crt'),
      otherKey: path.join(uploads, 'other.key'),
    };
    await writeFile(files.cert, registered.certPem);
    await writeFile(files.key, registered.keyPem, { mode: 0o600 });
    await writeFile(files.otherCert, other.certPem);
    await writeFile(files.otherKey, other.keyPem, { mode: 0o600 });

    const setup = startSetup(configFile);
    const killer = setTimeout(() => setup.child.kill('SIGKILL'), 120_000);
    try {
      const { page } = browser;
      await page.goto(await setup.url);
      // Without files: the ones of the previous attempt are kept by the page.
      const fill = async (cert: string | null, key: string | null, clientId = CLIENT_ID) => {
        await page.selectOption('select[name="graph.auth.method"]', 'certificate');
        await page.fill('input[name="graph.tenantId"]', TENANT);
        await page.fill('input[name="graph.clientId"]', clientId);
        if (cert) await page.setInputFiles('input[name="graph.auth.certificateFile"]', cert);
        if (key) await page.setInputFiles('input[name="graph.auth.privateKeyFile"]', key);
        await page.fill('input[name="graph.mailbox"]', MAILBOX);
        await page.fill('input[name="smtp.listen"]', '127.0.0.1:0');
        await page.fill('input[name="spool.dir"]', path.join(certDir, 'spool'));
        await page.click('details summary');
        await page.fill('input[name="graph.authorityHost"]', certEmu.url);
        await page.fill('input[name="graph.endpoint"]', certEmu.url);
        await page.fill('input[name="check.sendTo"]', 'it@contoso.example');
      };
      await page.selectOption('select[name="graph.auth.method"]', 'certificate');
      // Only the certificate method's fields are shown (CSS :has(), no script).
      expect(await page.isVisible('input[name="graph.auth.certificateFile"]')).toBe(true);
      expect(await page.isVisible('input[name="graph.auth.privateKeyFile"]')).toBe(true);
      expect(await page.isVisible('input[name="graph.auth.clientSecret"]')).toBe(false);

      // The two files swapped: said before Entra is asked, with the fix.
      await fill(files.key, files.cert);
      await page.click('button[type=submit]');
      const swapped = page.locator('li.fail[data-stage="certificate"]');
      await swapped.waitFor();
      expect(await swapped.innerText()).toContain('the certificate field holds a private key, not a certificate');
      expect(await swapped.innerText()).toContain('choose the certificate (.cer, .crt or .pem) for "Certificate"');
      await page.locator('#not-saved').waitFor();
      await screenshots(page, 'setup-certificate-swapped');

      // A certificate the app does not know: the AADSTS diagnosis, and nothing written.
      await fill(files.otherCert, files.otherKey);
      await page.click('button[type=submit]');
      const failure = page.locator('li.fail[data-stage="token"]');
      await failure.waitFor().catch(async (err: unknown) => {
        throw new Error(`${(err as Error).message}\n--- page ---\n${await page.innerText('body')}\n--- setup ---\n${setup.output()}`);
      });
      expect(await failure.innerText()).toContain('AADSTS700027');
      expect(await failure.innerText()).toContain('the certificate is not registered on the app');
      // The page streams: the verdict comes once every stage has run.
      await page.locator('#not-saved').waitFor();
      expect(existsSync(path.join(certDir, 'graph-certificate.pem'))).toBe(false);
      expect(await readFile(configFile, 'utf8')).not.toContain('certificate');

      // The registered one, but a mistyped application ID: Entra's diagnosis names the app.
      await fill(files.cert, files.key, 'mistyped-client');
      await page.click('button[type=submit]');
      await page.locator('li.fail[data-stage="token"]').waitFor();
      expect(await page.locator('li.fail[data-stage="token"]').innerText()).toContain('AADSTS700016');
      await page.locator('#not-saved').waitFor();
      // A browser never refills a file input: the page keeps the files chosen and says so.
      expect(await page.locator('[data-kept]').evaluateAll((els) => els.map((e) => e.getAttribute('data-kept')))).toEqual(['graph.auth.certificateFile', 'graph.auth.privateKeyFile']);

      // Only the application ID corrected, no file chosen again.
      await fill(null, null);
      await page.click('button[type=submit]');
      await page.locator('#saved').waitFor().catch(async (err: unknown) => {
        throw new Error(`${(err as Error).message}\n--- page ---\n${await page.innerText('body')}\n--- setup ---\n${setup.output()}`);
      });
      const steps = await page.locator('ol.steps').first().innerText();
      expect(steps).toContain(`certificate CN=relay app (registered), thumbprint ${new X509Certificate(registered.certPem).fingerprint.replace(/:/g, '')}`);
      expect(steps).toContain('token acquired');
      expect(steps).toContain('test message from relay@contoso.example accepted by Graph for it@contoso.example');
      await screenshots(page, 'setup-certificate-saved');
      // The 40-digit thumbprint wraps at phone width.
      await page.setViewportSize({ width: 390, height: 900 });
      expect(await overflowsHorizontally(page)).toBe(false);
      await page.setViewportSize({ width: 1280, height: 900 });
      expect(await setup.exited).toBe(0);
    } finally {
      clearTimeout(killer);
      setup.child.kill('SIGKILL');
    }

    try {
      const written = await readFile(configFile, 'utf8');
      const stored = { cert: path.join(certDir, 'graph-certificate.pem'), key: path.join(certDir, 'graph-private-key.pem') };
      expect(written).toContain('method: certificate');
      expect(written).toContain(`certificateFile: ${stored.cert}`);
      expect(written).toContain(`privateKeyFile: ${stored.key}`);
      expect(written).not.toContain('BEGIN');
      for (const file of [configFile, stored.cert, stored.key]) expect((await stat(file)).mode & 0o777, file).toBe(0o600);
      expect((await readFile(stored.cert, 'utf8')).trim()).toBe(registered.certPem.trim());
      expect(await readFile(stored.key, 'utf8')).toBe(registered.keyPem);
      // Nothing of the failed attempt's certificate was kept.
      expect(await readFile(stored.cert, 'utf8')).not.toBe(other.certPem);

      const tokensBefore = certEmu.identity.grants.get('client_credentials') ?? 0;
      const relay = await spawnRelay(['serve', '--config', configFile], {}, 60_000);
      try {
        const transport = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true });
        await transport.sendMail({ from: MAILBOX, to: 'it@contoso.example', subject: 'after certificate setup', text: 'configured by the setup page', headers: { 'X-Test-Id': 'after-cert-setup' } });
        transport.close();
        const delivered = await waitForDelivery(certEmu, 'after-cert-setup', 20_000);
        expect(delivered.sentBy).toBe(CLIENT_ID);
        // The relay signed its own client assertion with the stored key.
        expect(certEmu.identity.grants.get('client_credentials') ?? 0).toBeGreaterThan(tokensBefore);
      } finally {
        relay.child.kill('SIGTERM');
        await relay.exited;
      }
    } finally {
      await certEmu.close();
    }
  }, 240_000);
});
