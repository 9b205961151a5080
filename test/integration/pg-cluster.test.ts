/**
 * Several relays, one queue, real processes: three relay processes on one PostgreSQL database, 8
 * SMTP senders spread over them, 600 messages, one relay SIGKILLed mid-burst and never restarted,
 * 429s with Retry-After injected. Every acknowledged message reaches the Graph emulator; a message
 * is sent twice only if the killed node had it in flight when it died (read from its leases), and
 * only twice; the emulator never saw more than 4 requests in flight for the mailbox nor one before
 * a Retry-After had passed. Then the database is restarted
 * (pg_ctl restart -m fast) while senders send: 451s in the gap, never a 250 for a lost message.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { MAILBOX, relayConfigInput, startTestEmulator } from '../helpers/harness.js';
import { queryRows, startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let cluster: PgCluster;
let emulator: RunningEmulator;
let dir: string;
const relays: RelayProcess[] = [];

beforeAll(async () => {
  [cluster, emulator] = await Promise.all([startPgCluster(), startTestEmulator()]);
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-cluster-'));
}, 120_000);
afterAll(async () => {
  for (const r of relays) r.child.kill('SIGKILL');
  await Promise.all(relays.map((r) => r.exited));
  await emulator?.close();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function startRelays(count: number, url: string): Promise<RelayProcess[]> {
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, emulator.caPem);
  const started: RelayProcess[] = [];
  for (let i = 0; i < count; i += 1) {
    const configFile = path.join(dir, `relay-${url.split('/').pop()}-${i}.yaml`);
    const input = relayConfigInput(emulator, path.join(dir, `unused-${i}`), { graph: { caFile }, spool: { backend: 'postgres', postgres: { url, leaseTimeout: '3s' } } });
    await writeConfig(configFile, { ...input, log: { level: 'info' } });
    const relay = await spawnRelay(['serve', '--config', configFile]);
    relays.push(relay);
    started.push(relay);
  }
  return started;
}

/** One message over a fresh connection; the reply code, or 0 when the relay could not be reached. */
async function sendOne(port: number, testId: string): Promise<number> {
  let client: RawSmtpClient;
  try {
    client = await RawSmtpClient.connect(port);
  } catch {
    return 0;
  }
  try {
    await client.reply();
    await client.command('EHLO sender.test');
    const reply = await client.send('device@contoso.example', ['ops@contoso.example'], `From: device@contoso.example\r\nTo: ops@contoso.example\r\nSubject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nalert body\r\n`);
    return reply.code;
  } catch {
    return 0;
  } finally {
    await client.quit().catch(() => undefined);
  }
}

/** The test ids of the messages leased to a node (its name is host:pid, dispatcher.ts nodeName). */
async function leasedTo(url: string, node: string): Promise<Set<string>> {
  const rows = await queryRows<{ content: Buffer }>(
    url,
    `SELECT (SELECT string_agg(c.data, ''::bytea ORDER BY c.seq) FROM relay.chunks c WHERE c.message_id = m.id) AS content FROM relay.messages m WHERE m.lease_owner = '${node.replace(/'/g, "''")}'`,
  );
  return new Set(rows.map((r) => /^X-Test-Id: (\S+)\r$/m.exec(r.content.toString('latin1'))?.[1] ?? ''));
}

const deliveredIds = () => emulator.mail.delivered.map((m) => /^X-Test-Id: (\S+)\r$/m.exec(m.mime?.toString('latin1') ?? '')?.[1] ?? '');

describe('three relays on one database', () => {
  it('delivers every acknowledged message after one relay is SIGKILLed mid-burst, within Graph\'s limits', async () => {
    const url = await cluster.createDatabase();
    const nodes = await startRelays(3, url);
    emulator.mail.latencyMs = 20;
    // Across nodes a 429 travels through the database: the node that read it commits the pause,
    // the others read it right before each request (claim-loop.ts refreshPause). A request whose
    // pause check ran before that commit was already on its way, like one in flight on the same
    // node; under CI load (3 relays, PostgreSQL, the emulator and other test files on 2 cores)
    // such requests arrived 120-145 ms after the 429 was sent. 400 ms still catches a node that
    // ignores the shared pause: it would keep sending for the whole second the Retry-After asks.
    emulator.mail.retryAfterGraceMs = 400;
    // A 429 with Retry-After every 1.5 s during the run, one at a time (each rule answers one
    // request): on a slow machine unconsumed rules would pile up and pause the mailbox long after.
    const throttle = setInterval(() => {
      if (emulator.faults.pending === 0) emulator.faults.add({ route: 'sendMail', status: 429, code: 'ApplicationThrottled', retryAfter: '1' });
    }, 1500);
    const total = 600;
    const acked = new Set<string>();
    const refused: number[] = [];
    let next = 0;
    let killed = false;
    let heldByKilled: Promise<Set<string>> = Promise.resolve(new Set());
    const resent = new Set<string>();
    const alive = () => nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
    // 8 senders; each starts on its own relay and, like a sender behind DNS round robin, tries the next one when a relay does not answer.
    const sender = async (s: number) => {
      for (let n = next++; n < total; n = next++) {
        const testId = `cluster-${n}`;
        for (let tries = 0; tries < 6; tries += 1) {
          const targets = alive();
          const code = await sendOne(targets[(s + tries) % targets.length]!.port, testId);
          if (code === 250) {
            acked.add(testId);
            break;
          }
          if (code !== 0) refused.push(code);
          // No reply (the relay died mid-transaction): sent again elsewhere, it may be there twice.
          else resent.add(testId);
        }
        if (!killed && acked.size >= 200) {
          killed = true;
          nodes[0]!.child.kill('SIGKILL');
          // What it held when it died, read before its leases lapse (leaseTimeout 3 s) and pass on.
          heldByKilled = nodes[0]!.exited.then(() => leasedTo(url, `${os.hostname()}:${nodes[0]!.child.pid}`));
          heldByKilled.catch(() => undefined);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, s) => sender(s))).finally(() => clearInterval(throttle));
    expect(killed).toBe(true);
    expect(acked.size).toBeGreaterThanOrEqual(590);
    await until(() => [...acked].every((id) => deliveredIds().includes(id)), 180_000, () => `${[...acked].filter((id) => !deliveredIds().includes(id)).length} acknowledged messages missing`);
    const ids = deliveredIds();
    const duplicates = ids.length - new Set(ids).size;
    const duplicated = new Set(ids.filter((id, i) => ids.indexOf(id) !== i));
    const held = await heldByKilled;
    console.info(`cluster: ${acked.size} acknowledged, ${ids.length} delivered, ${duplicates} duplicate(s), the killed relay held ${held.size} lease(s), ${resent.size} sent again after no reply, refusals ${JSON.stringify(refused)}, max in flight ${emulator.mail.maxInFlightSeen.get(MAILBOX)}, latest request after a 429 inside the grace ${emulator.mail.graceUsedMs} ms`);
    // Delivered twice only what the killed node had in flight when it died, read from its leases
    // (requests under way, answered ones whose outcome it had not written yet, a standby it had
    // started in a freed slot: the database learns of that with the outcome before it), or what a
    // sender sent twice because the killed node died before its reply (SMTP's own duplicate: the
    // first copy was committed). Each of them once more.
    expect([...duplicated].filter((id) => !held.has(id) && !resent.has(id))).toEqual([]);
    expect(duplicates).toBe(duplicated.size);
    expect(emulator.mail.maxInFlightSeen.get(MAILBOX)).toBeLessThanOrEqual(4);
    expect(emulator.mail.concurrencyThrottles).toBe(0);
    expect(emulator.mail.retryAfterViolations).toEqual([]);
    expect(emulator.mail.requests.filter((r) => r.route === 'sendMail' && r.status === 429).length).toBeGreaterThanOrEqual(1);
    for (const n of nodes.slice(1)) n.child.kill('SIGTERM');
    emulator.mail.retryAfterGraceMs = 100;
  }, 400_000);

  it('restarting the database under load: 451s in the gap, every acknowledged message delivered', async () => {
    const url = await cluster.createDatabase();
    const nodes = await startRelays(2, url);
    emulator.faults.clear();
    emulator.mail.latencyMs = 0;
    const before = new Set(deliveredIds());
    const acked = new Set<string>();
    const codes = new Map<number, number>();
    let stop = false;
    let n = 0;
    const sender = async (s: number) => {
      while (!stop) {
        const testId = `restart-${n++}`;
        const code = await sendOne(nodes[s % 2]!.port, testId);
        codes.set(code, (codes.get(code) ?? 0) + 1);
        if (code === 250) acked.add(testId);
      }
    };
    const senders = Promise.all(Array.from({ length: 8 }, (_, s) => sender(s)));
    await until(() => acked.size >= 50, 30_000);
    await cluster.restart();
    const afterRestart = acked.size;
    await until(() => acked.size >= afterRestart + 50, 30_000);
    stop = true;
    await senders;
    await until(() => [...acked].every((id) => deliveredIds().includes(id)), 60_000, () => `${[...acked].filter((id) => !deliveredIds().includes(id)).length} acknowledged messages missing`);
    console.info(`database restart: replies ${JSON.stringify(Object.fromEntries(codes))}, ${acked.size} acknowledged, ${deliveredIds().filter((id) => !before.has(id) && id.startsWith('restart-')).length} delivered`);
    // Only 250 or 451 (or no answer at all while a connection was cut): never a permanent refusal.
    expect(codes.get(451) ?? 0).toBeGreaterThan(0);
    expect([...codes.keys()].every((c) => c === 250 || c === 451 || c === 0)).toBe(true);
    for (const node of nodes) node.child.kill('SIGTERM');
  }, 180_000);
});
