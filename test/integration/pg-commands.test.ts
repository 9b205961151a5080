/**
 * `db migrate` and `spool import`, run as the real command: migrations applied once when several
 * nodes migrate at the same moment (advisory lock), a database newer than the code refused, and a
 * single node's file spool moved into the shared queue with nothing lost or doubled when the
 * import runs twice.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsSpool } from '../../src/spool/fs/fs-spool.js';
import { LATEST_VERSION, MIGRATIONS } from '../../src/spool/postgres/migrations.js';
import { newQueueId } from '../../src/spool/queue-id.js';
import { queryRows, startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { MAIN, writeConfig } from '../helpers/relay-process.js';

const run = promisify(execFile);
let cluster: PgCluster;
let dir: string;
beforeAll(async () => {
  cluster = await startPgCluster();
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-pgcmd-'));
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function configFor(url: string): Promise<string> {
  const file = path.join(dir, `relay-${url.split('/').pop()}.yaml`);
  await writeConfig(file, {
    graph: { tenantId: 't', clientId: 'c', auth: { method: 'clientSecret', clientSecret: 's' }, mailbox: 'relay@contoso.example' },
    spool: { dir: path.join(dir, 'unused'), backend: 'postgres', postgres: { url } },
  });
  return file;
}

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { timeout: 60_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

const query = queryRows;

describe('db migrate', () => {
  it('applies each migration once when three nodes migrate at the same moment, and refuses a newer schema', async () => {
    const url = await cluster.createDatabase();
    const config = await configFor(url);
    const results = await Promise.all([1, 2, 3].map(() => cli(['db', 'migrate', '--config', config])));
    expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
    expect(results.filter((r) => r.out.includes('migrated from version 0')).length).toBe(1);
    expect(results.filter((r) => r.out.includes('up to date')).length).toBe(2);
    expect(await query(url, 'SELECT version FROM relay.schema_migrations ORDER BY version')).toEqual(MIGRATIONS.map((m) => ({ version: m.version })));
    await query(url, `INSERT INTO relay.schema_migrations (version, name) VALUES (${LATEST_VERSION + 1}, 'from the future')`);
    const refused = await cli(['db', 'migrate', '--config', config]);
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/newer than this relay knows.*upgrade this relay/);
  }, 90_000);

  it('upgrades a database an older relay created (version 1), keeping its queue', async () => {
    const url = await cluster.createDatabase();
    const first = MIGRATIONS[0]!;
    await query(
      url,
      `CREATE SCHEMA relay; CREATE TABLE relay.schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
       ${first.sql}; INSERT INTO relay.schema_migrations (version, name) VALUES (1, 'v1');
       INSERT INTO relay.messages (id, state, mailbox, entry) VALUES ('OLD1', 'queued', 'relay@contoso.example', '{}')`,
    );
    const upgraded = await cli(['db', 'migrate', '--config', await configFor(url)]);
    expect(upgraded.code).toBe(0);
    expect(upgraded.out).toContain('migrated from version 1');
    expect((await query<{ version: number }>(url, 'SELECT max(version) AS version FROM relay.schema_migrations'))[0]?.version).toBe(LATEST_VERSION);
    expect(await query(url, "SELECT id FROM relay.messages")).toEqual([{ id: 'OLD1' }]);
  }, 60_000);
});

describe('spool import', () => {
  it('moves waiting and failed messages into the shared queue once, even when run twice', async () => {
    const url = await cluster.createDatabase();
    const config = await configFor(url);
    const spoolDir = path.join(dir, 'single-node-spool');
    const spool = new FsSpool(spoolDir);
    await spool.recover();
    const stored = [];
    for (let i = 0; i < 3; i += 1) {
      const id = newQueueId();
      const writer = await spool.beginMessage(id);
      await writer.write(Buffer.from(`Subject: import ${i}\r\n\r\n${'x'.repeat(i === 2 ? 400_000 : 10)}\r\n`));
      stored.push(await writer.commit({ id, receivedAt: Date.now(), envelope: { mailFrom: 'a@x.example', rcptTo: ['b@x.example'] }, client: { address: '127.0.0.1', helo: 'h' }, mailbox: 'relay@contoso.example' }));
    }
    const failed = { ...stored[0]!, attempts: 3, failedAt: Date.now(), failReason: 'HTTP 400' };
    await spool.moveToFailed(failed);
    await spool.update({ ...stored[1]!, attempts: 2, nextAttemptAt: Date.now() + 60_000 });
    await spool.close();

    const first = await cli(['spool', 'import', '--from', spoolDir, '--config', config]);
    expect(first.out).toContain('imported 2 waiting and 1 failed message(s)');
    expect(first.code).toBe(0);
    const rows = await query<{ id: string; state: string; attempts: number; size: string }>(url, "SELECT id, state, (entry->>'attempts')::int AS attempts, size FROM relay.messages ORDER BY id");
    // Queue ids made in the same millisecond differ only in their random part: compared in id order.
    const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1);
    expect(rows).toEqual(
      [
        { id: stored[0]!.id, state: 'failed', attempts: 3, size: String(stored[0]!.size) },
        { id: stored[1]!.id, state: 'queued', attempts: 2, size: String(stored[1]!.size) },
        { id: stored[2]!.id, state: 'queued', attempts: 0, size: String(stored[2]!.size) },
      ].sort(byId),
    );
    const bytes = await query<{ n: string }>(url, `SELECT sum(length(data)) AS n FROM relay.chunks WHERE message_id = '${stored[2]!.id}'`);
    expect(Number(bytes[0]?.n)).toBe(stored[2]!.size);
    const second = await cli(['spool', 'import', '--from', spoolDir, '--config', config]);
    expect(second.code).toBe(0);
    expect(second.out).toContain('imported 0 waiting and 0 failed message(s)');
    expect(await query(url, 'SELECT count(*)::int AS n FROM relay.messages')).toEqual([{ n: 3 }]);
  }, 90_000);
});
