/**
 * Real SMTP clients a sysadmin would use (Python's smtplib, curl, swaks) against the relay, and the
 * swaks smoke script the README suggests. CI installs swaks, curl and python3; without them these
 * skip, saying which program is missing (with CI=true they fail instead: test/helpers/prerequisites.ts).
 * Each client runs in its own process group with a deadline below the test's (20 s; the test has 60 s).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { itWithTool } from '../helpers/prerequisites.js';
import { freePort } from '../helpers/free-port.js';
import { runProcess } from '../helpers/processes.js';

const run = (program: string, args: string[], waitingFor: string, timeoutMs = 20_000) => runProcess(program, args, { timeoutMs, waitingFor, check: true });

let h: Harness;
let dir: string;
beforeAll(async () => {
  h = await startHarness();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-clients-'));
});
afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe('real SMTP clients', () => {
  itWithTool('python3')('python3 smtplib: multipart with a binary attachment and a Bcc by envelope', async () => {
    const attachment = randomBytes(5000);
    await writeFile(path.join(dir, 'blob.bin'), attachment);
    const script = `
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m['From'] = 'Backup Server <backup@contoso.example>'
m['To'] = 'ops@contoso.example'
m['Subject'] = 'Sicherung fehlgeschlagen – Job 7'
m['X-Test-Id'] = 'smtplib-1'
m.set_content('Plain text: the job failed.')
m.add_alternative('<p>The job <b>failed</b>.</p>', subtype='html')
m.add_attachment(open(sys.argv[2], 'rb').read(), maintype='application', subtype='octet-stream', filename='blob.bin')
with smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s:
    s.send_message(m, to_addrs=['ops@contoso.example', 'audit@contoso.example'])
`;
    await run('python3', ['-c', script, String(h.port), path.join(dir, 'blob.bin')], 'python3 smtplib to send');
    const message = await waitForDelivery(h.emulator, 'smtplib-1');
    const parsed = await simpleParser(message.mime as Buffer);
    expect(parsed.subject).toBe('Sicherung fehlgeschlagen – Job 7');
    expect(parsed.text?.trim()).toBe('Plain text: the job failed.');
    expect(parsed.html).toContain('<b>failed</b>');
    expect(parsed.attachments[0]?.content.equals(attachment)).toBe(true);
    expect(message.recipients.sort()).toEqual(['audit@contoso.example', 'ops@contoso.example']);
  });

  itWithTool('curl')('curl smtp:// uploads a prepared message', async () => {
    const file = path.join(dir, 'curl.eml');
    await writeFile(file, 'From: nas@contoso.example\r\nTo: ops@contoso.example\r\nSubject: RAID degraded\r\nX-Test-Id: curl-1\r\n\r\nVolume 1 is degraded.\r\n');
    await run('curl', ['--silent', '--show-error', `smtp://127.0.0.1:${h.port}`, '--mail-from', 'nas@contoso.example', '--mail-rcpt', 'ops@contoso.example', '--upload-file', file], 'curl to upload');
    const parsed = await simpleParser((await waitForDelivery(h.emulator, 'curl-1')).mime as Buffer);
    expect(parsed.subject).toBe('RAID degraded');
    expect(parsed.text?.trim()).toBe('Volume 1 is degraded.');
  });

  itWithTool('swaks')('swaks with an attachment and a UTF-8 body', async () => {
    const file = path.join(dir, 'swaks.txt');
    await writeFile(file, 'Prüfbericht ✓\n');
    const { stdout } = await run('swaks', ['--server', `127.0.0.1:${h.port}`, '--from', 'ups@contoso.example', '--to', 'ops@contoso.example', '--header', 'X-Test-Id: swaks-1', '--header', 'Subject: UPS on battery', '--attach', `@${file}`], 'swaks to send');
    expect(stdout).toMatch(/<- {2}250 2\.6\.0 Ok: queued as [0-9A-Z]{19}/);
    const parsed = await simpleParser((await waitForDelivery(h.emulator, 'swaks-1')).mime as Buffer);
    expect(parsed.subject).toBe('UPS on battery');
    expect(parsed.attachments[0]?.content.toString('utf8')).toBe('Prüfbericht ✓\n');
  });

  itWithTool('swaks')('the README smoke script passes (demo mode, swaks, SIGTERM)', async () => {
    const script = path.resolve(__dirname, '../smoke/swaks-smoke.sh');
    const { stdout } = await run('bash', [script, String(await freePort())], 'the swaks smoke script to pass', 40_000);
    expect(stdout).toMatch(/swaks-smoke: ok/);
  });
});
