/**
 * Scanned PDFs beyond one Graph request (~4 MB): the relay sends a draft without the big
 * attachments, uploads each through an upload session in ordered chunks, then sends the draft.
 * Bytes, names, inline flags and content-ids survive; the relay's memory stays bounded (its own
 * process is measured); a missing Mail.ReadWrite permission is diagnosed.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { CLIENT_ID, CLIENT_SECRET, MAILBOX, relayConfigInput, startHarness, startTestEmulator, TENANT, waitForDelivery } from '../helpers/harness.js';
import { spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';

let emulator: RunningEmulator;
let cluster: PgCluster;
let dir: string;
// The same relay on each spool backend: the file spool and the shared PostgreSQL queue (whose
// chunks stream through a temporary file for the upload sessions).
const relays: Record<string, RelayProcess> = {};
beforeAll(async () => {
  [emulator, cluster] = await Promise.all([startTestEmulator(), startPgCluster()]);
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-large-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
  const backends = { filesystem: {}, postgres: { backend: 'postgres', postgres: { url: await cluster.createDatabase() } } };
  for (const [name, spool] of Object.entries(backends)) {
    const configFile = path.join(dir, `relay-${name}.yaml`);
    await writeConfig(configFile, { ...relayConfigInput(emulator, path.join(dir, `spool-${name}`), { graph: { caFile }, smtp: { maxMessageSize: '100MB' }, spool }), log: { level: 'info' } });
    relays[name] = await spawnRelay(['serve', '--config', configFile]);
  }
}, 120_000);
afterAll(async () => {
  for (const relay of Object.values(relays)) await relay.stop();
  await emulator?.close();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const peakRssMb = (relay: RelayProcess) => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${relay.child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

describe.each(['filesystem', 'postgres'])('large messages (%s spool)', (backend) => {
  it.each([
    ['3.5 MB', 3.5],
    ['12 MB', 12],
    ['60 MB', 60],
  ])('delivers a %s attachment byte-for-byte through a draft and an upload session', async (label, megabytes) => {
    const relay = relays[backend] as RelayProcess;
    const size = Math.round(megabytes * 1024 * 1024);
    const file = path.join(dir, `scan-${backend}-${megabytes}.pdf`);
    await writeFile(file, randomBytes(size));
    const logo = randomBytes(40_000);
    const testId = `large-${backend}-${megabytes}`;
    await nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true }).sendMail({
      from: 'scanner@contoso.example',
      to: 'finance@contoso.example',
      bcc: 'archive@contoso.example',
      subject: `Scan ${label}`,
      text: 'Your scan is attached.',
      html: '<p>Your scan</p><img src="cid:logo@scanner">',
      attachments: [
        { filename: `Scan ${label} – Übersicht.pdf`, path: file, contentType: 'application/pdf' },
        { filename: 'logo.png', content: logo, contentType: 'image/png', cid: 'logo@scanner' },
      ],
      headers: { 'X-Test-Id': testId },
    });
    const delivered = await waitForDelivery(emulator, testId, 120_000);
    expect(delivered.via).toBe('draft');
    expect(delivered.recipients.sort()).toEqual(['archive@contoso.example', 'finance@contoso.example']);
    // The big attachment travelled through the upload session, exactly.
    expect(delivered.attachments).toHaveLength(1);
    const uploaded = delivered.attachments[0];
    expect(uploaded?.name).toBe(`Scan ${label} – Übersicht.pdf`);
    expect(uploaded?.contentType).toBe('application/pdf');
    expect(uploaded?.isInline).toBe(false);
    expect(uploaded?.bytes.equals(await readFile(file))).toBe(true);
    // The rest stayed in the draft's MIME: text, HTML and the inline image with its content-id.
    const draft = await simpleParser(delivered.mime as Buffer);
    expect(draft.subject).toBe(`Scan ${label}`);
    expect(draft.text?.trim()).toBe('Your scan is attached.');
    const inline = draft.attachments.find((a) => a.contentId === '<logo@scanner>');
    expect(inline?.content.equals(logo)).toBe(true);
    expect(emulator.mail.uploadAuthorizationHeaders).toBe(0);
    if (megabytes === 60) {
      const peak = peakRssMb(relay);
      console.info(`large messages (${backend} spool): relay peak RSS ${peak.toFixed(1)} MB after a 60 MB attachment`);
      expect(peak).toBeLessThan(200);
    }
  }, 180_000);
});

describe('permissions for the large-message path', () => {
  it('says exactly that Mail.ReadWrite is missing, and keeps the message queued', async () => {
    const h = await startHarness({ emulator: { apps: [{ clientId: CLIENT_ID, tenantId: TENANT, secrets: [CLIENT_SECRET], roles: ['Mail.Send'] }] }, config: { smtp: { maxMessageSize: '20MB' } } });
    try {
      await nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true }).sendMail({ from: MAILBOX, to: 'a@contoso.example', subject: 'big', text: 'x', attachments: [{ filename: 'big.bin', content: randomBytes(4 * 1024 * 1024) }] });
      const deadline = Date.now() + 10_000;
      while (!h.logs.records.some((r) => r.event === 'delivery.deferred') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const deferred = h.logs.records.find((r) => r.event === 'delivery.deferred');
      expect(deferred).toMatchObject({ level: 'error', operatorActionRequired: true, status: 403, reason: expect.stringContaining('grant Mail.ReadWrite (application)') });
      expect(await h.relay.spool.list('queue')).toHaveLength(1);
    } finally {
      await h.close();
    }
  });
});
