/**
 * A relay that dies for good leaves no draft behind (issue 13: "losing a node loses nothing"). Two
 * relay processes on one database; a large message's upload keeps failing, so the relay delivering
 * it holds a draft in the sending mailbox; that relay is SIGKILLed and never restarted. The other
 * relay sends the message again with a draft of its own, takes the dead relay's draft over once its
 * hold lapses (leaseTimeout) and deletes it. With the records on each relay's disk, the dead
 * relay's draft stayed in the mailbox's Drafts folder.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { migrate } from '../../src/spool/postgres/migrations.js';
import { PgSpool } from '../../src/spool/postgres/pg-spool.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import type { ClaimLimits } from '../../src/spool/spool.js';
import { MAILBOX, relayConfigInput, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { queryRows, startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import { until } from '../helpers/wait.js';

let cluster: PgCluster;
let emulator: RunningEmulator;
let dir: string;
const relays: RelayProcess[] = [];

beforeAll(async () => {
  [cluster, emulator] = await Promise.all([startPgCluster(), startTestEmulator()]);
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-pg-drafts-'));
}, 120_000);
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop('SIGKILL')));
  await emulator?.close();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const query = queryRows;

describe('drafts on the shared queue', () => {
  it("a relay SIGKILLed while it holds a draft: another relay delivers the message and deletes the dead relay's draft", async () => {
    const url = await cluster.createDatabase();
    const caFile = path.join(dir, 'ca.pem');
    await writeFile(caFile, emulator.caPem);
    const nodes: RelayProcess[] = [];
    for (let i = 0; i < 2; i += 1) {
      const configFile = path.join(dir, `relay-${i}.yaml`);
      const input = relayConfigInput(emulator, path.join(dir, `spool-${i}`), {
        graph: { caFile },
        smtp: { maxMessageSize: '40MB' },
        delivery: { retry: { minDelay: '1s', maxDelay: '2s' } },
        spool: { backend: 'postgres', postgres: { url, leaseTimeout: '2s' } },
      });
      await writeConfig(configFile, { ...input, log: { level: 'info' } });
      const relay = await spawnRelay(['serve', '--config', configFile]);
      relays.push(relay);
      nodes.push(relay);
    }
    // Every upload fails until the relay holding the draft is gone: the draft is kept for the upload to resume.
    emulator.faults.add({ route: 'upload', status: 500, code: 'generalException', times: 100_000 });
    const scan = randomBytes(5 * 1024 * 1024);
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: nodes[0]!.port, secure: false, ignoreTLS: true });
    await transport.sendMail({ from: MAILBOX, to: 'finance@contoso.example', subject: 'orphan', text: 'scan attached', attachments: [{ filename: 'scan.pdf', content: scan }], headers: { 'X-Test-Id': 'orphan-draft' } });
    transport.close();

    // The relay building the draft is named in the database (host:pid).
    let owner = '';
    await until(async () => {
      const rows = await query<{ owner: string; state: string }>(url, `SELECT owner, state FROM relay.drafts`);
      owner = rows.find((r) => r.state === 'building')?.owner ?? '';
      return owner !== '' && emulator.mail.drafts.size === 1;
    }, 30_000);
    const holder = nodes.find((n) => owner.includes(`:${n.child.pid}#`));
    expect(holder, `no relay has pid of ${owner}`).toBeDefined();
    const survivor = nodes.find((n) => n !== holder) as RelayProcess;
    await holder!.stop('SIGKILL');
    emulator.faults.clear();

    const delivered = await waitForDelivery(emulator, 'orphan-draft', 60_000);
    expect(delivered.via).toBe('draft');
    expect(delivered.attachments[0]?.bytes.equals(scan)).toBe(true);
    // The dead relay's draft is deleted by the survivor; nothing is left in Drafts or in the table.
    await until(async () => emulator.mail.drafts.size === 0 && (await query(url, 'SELECT 1 FROM relay.drafts')).length === 0, 30_000, () => `drafts left: ${[...emulator.mail.drafts.keys()].join(', ')}\n${survivor.output()}`);
    const deletes = emulator.mail.requests.filter((r) => r.route === 'deleteMessage' && r.status < 300);
    expect(deletes.length).toBeGreaterThanOrEqual(1);
    expect(survivor.output()).toContain('draft.cleanup_taken_over');
    expect(emulator.mail.retryAfterViolations).toEqual([]);
  }, 120_000);

  it("a draft's DELETE holds one of the mailbox's slots in the database: with the cluster's deliveries never more than 4", async () => {
    const url = await cluster.createDatabase();
    const pool = new pg.Pool({ connectionString: url });
    await migrate(pool);
    await pool.end();
    const spool = new PgSpool({ url });
    try {
      await spool.recover();
      const limits: ClaimLimits = { maxInFlightPerMailbox: 4, messagesPerMinute: 0, recipientsPerDay: 0, leaseMs: 30_000 };
      for (let i = 0; i < 6; i += 1) {
        const id = newQueueId();
        const writer = await spool.beginMessage(id);
        await writer.write(Buffer.from('Subject: x\r\n\r\nbody\r\n'));
        await writer.commit({ id, receivedAt: Date.now(), envelope: { mailFrom: 'a@contoso.example', rcptTo: ['b@contoso.example'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: MAILBOX, messageId: '<m@x>' });
      }
      const delivering = await spool.claim('node-a', 4, limits);
      expect(delivering).toHaveLength(4);
      const drafts = spool.draftStore('node-b', 30_000, () => 4);
      await drafts.put({ draftId: 'AAMkDraft1', mailbox: MAILBOX, queueId: 'Q1', state: 'delete', since: Date.now(), attempts: 0, retryAt: 0 }, []);
      // Four deliveries in flight: no slot for the DELETE.
      expect(await drafts.takeSlot?.('AAMkDraft1')).toBe('busy');
      expect(await drafts.takeSlot?.('AAMkNeverRecorded')).toBe('missing');
      expect(await spool.settle(delivering[0]!, { kind: 'delivered' })).toBe(true);
      // A slot freed: the DELETE takes it, and a claim now finds none.
      expect(await drafts.takeSlot?.('AAMkDraft1')).toBe('taken');
      expect(await spool.claim('node-c', 4, limits)).toEqual([]);
      // Given back (the DELETE answered): the next claim takes it.
      await drafts.releaseSlot?.('AAMkDraft1');
      expect(await spool.claim('node-c', 4, limits)).toHaveLength(1);
      // A paused mailbox gives no slot either.
      expect(await spool.settle(delivering[1]!, { kind: 'delivered' })).toBe(true);
      await spool.pauseMailbox(MAILBOX, Date.now() + 60_000);
      expect(await drafts.takeSlot?.('AAMkDraft1')).toBe('busy');
      // Only the relay holding the draft takes a slot for it (even one of the same name: a random part tells them apart).
      expect(await spool.draftStore('node-c', 30_000, () => 4).takeSlot?.('AAMkDraft1')).toBe('other');
      expect(await spool.draftStore('node-b', 30_000, () => 4).takeSlot?.('AAMkDraft1')).toBe('other');
    } finally {
      await spool.close();
    }
  }, 60_000);
});
