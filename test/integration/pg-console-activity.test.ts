/**
 * The console's figures on the PostgreSQL spool are the cluster's (issue 14: "cluster-wide once
 * the PostgreSQL spool exists"): two relay processes on one database, mail sent to each, and ONE
 * node's overview counts and chart show the sum of both nodes' accepted and delivered messages.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningEmulator } from '../../src/emulator/server.js';
import { relayConfigInput, startTestEmulator, waitForDelivery } from '../helpers/harness.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { spawnRelay, writeConfig, type RelayProcess } from '../helpers/relay-process.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { until } from '../helpers/wait.js';

let cluster: PgCluster;
let emulator: RunningEmulator;
let dir: string;
const relays: RelayProcess[] = [];

beforeAll(async () => {
  [cluster, emulator] = await Promise.all([startPgCluster(), startTestEmulator()]);
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-pg-console-'));
}, 120_000);
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop('SIGTERM')));
  await emulator?.close();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function sendOne(port: number, testId: string): Promise<number> {
  const client = await RawSmtpClient.connect(port);
  try {
    await client.reply();
    await client.command('EHLO sender.test');
    const reply = await client.send('device@contoso.example', ['ops@contoso.example'], `From: device@contoso.example\r\nTo: ops@contoso.example\r\nSubject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nbody\r\n`);
    return reply.code;
  } finally {
    await client.quit().catch(() => undefined);
  }
}

interface OverviewFigures {
  scope: string | null;
  hour: Record<string, number>;
  day: Record<string, number>;
  chart: Record<string, number>;
}

/** The overview page as the console serves it (no admin.token: loopback only, a session per visit). */
async function overview(adminUrl: string): Promise<OverviewFigures> {
  const res = await request(`${adminUrl}/`);
  const page = await res.body.text();
  expect(res.statusCode).toBe(200);
  const row = (window: string) => {
    const tr = new RegExp(`<tr data-window="${window}">(.*?)</tr>`, 's').exec(page)?.[1] ?? '';
    return Object.fromEntries([...tr.matchAll(/data-count="(\w+)">(\d+)</g)].map((m) => [m[1] as string, Number(m[2])]));
  };
  const chartSvg = /data-testid="chart-messages"(.*?)<\/svg>/s.exec(page)?.[1] ?? '';
  const chart = Object.fromEntries([...chartSvg.matchAll(/data-series="(\w+)" data-total="(\d+)"/g)].map((m) => [m[1] as string, Number(m[2])]));
  return { scope: /data-scope="([\w-]+)"/.exec(page)?.[1] ?? null, hour: row('hour'), day: row('day'), chart };
}

describe('console on the PostgreSQL spool', () => {
  it("one node's overview shows the accepted and delivered messages of every node sharing the queue", async () => {
    const url = await cluster.createDatabase();
    const caFile = path.join(dir, 'ca.pem');
    await writeFile(caFile, emulator.caPem);
    const admins: string[] = [];
    for (let i = 0; i < 2; i += 1) {
      const configFile = path.join(dir, `relay-${i}.yaml`);
      const input = relayConfigInput(emulator, path.join(dir, `unused-${i}`), { graph: { caFile }, spool: { backend: 'postgres', postgres: { url, leaseTimeout: '5s' } } });
      await writeConfig(configFile, { ...input, log: { level: 'info' } });
      const relay = await spawnRelay(['serve', '--config', configFile], {}, 60_000);
      relays.push(relay);
      const admin = /"event":"relay.started".*?"admin":"(http:\/\/[^"]+)"/.exec(relay.output())?.[1];
      expect(admin).toBeDefined();
      admins.push(admin as string);
    }
    const [a, b] = relays as [RelayProcess, RelayProcess];
    // 2 messages to node A, 3 to node B.
    const ids = ['a-1', 'a-2', 'b-1', 'b-2', 'b-3'];
    for (const id of ids) expect(await sendOne(id.startsWith('a') ? a.port : b.port, `console-${id}`)).toBe(250);
    for (const id of ids) await waitForDelivery(emulator, `console-${id}`, 30_000);

    // Node B's counts reach the database within seconds (shared-activity.ts FLUSH_MS); A's page shows the sum.
    let seen: OverviewFigures | null = null;
    await until(
      async () => {
        seen = await overview(admins[0] as string);
        if (seen.hour.accepted === 5 && seen.hour.delivered === 5) return true;
        await new Promise((r) => setTimeout(r, 250));
        return false;
      },
      60_000,
      () => `A's overview: ${JSON.stringify(seen)}\n--- A ---\n${a.output().slice(-3000)}\n--- B ---\n${b.output().slice(-3000)}`,
    );
    const figures = seen as unknown as OverviewFigures;
    expect(figures.scope).toBe('cluster');
    expect(figures.hour).toEqual({ accepted: 5, delivered: 5, deferred: 0, failed: 0 });
    expect(figures.day).toEqual({ accepted: 5, delivered: 5, deferred: 0, failed: 0 });
    expect(figures.chart).toEqual({ accepted: 5, delivered: 5 });

    // Each node stored only its own counts (A's 2 and B's 3 accepted, delivered by whichever node claimed them).
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ node: string; accepted: number; delivered: number }>(
        'SELECT node, sum(accepted)::int AS accepted, sum(delivered)::int AS delivered FROM relay.activity GROUP BY node ORDER BY node',
      );
      // Rows are named hostname:pid (dispatcher.ts nodeName): one set per relay process.
      expect(rows.map((r) => Number(r.node.split(':').pop())).sort()).toEqual(relays.map((r) => r.child.pid).sort());
      expect(rows.map((r) => r.accepted).sort()).toEqual([2, 3]);
      expect(rows.reduce((sum, r) => sum + r.delivered, 0)).toBe(5);
    } finally {
      await client.end();
    }
    // And B's page shows the same cluster figures.
    await until(async () => (await overview(admins[1] as string)).hour.accepted === 5, 30_000);

    // A node stopped cleanly right after its work stores its last counts on the way out (app.ts stop).
    expect(await sendOne(b.port, 'console-b-last')).toBe(250);
    await waitForDelivery(emulator, 'console-b-last', 30_000);
    expect(await b.stop('SIGTERM')).toBe(0);
    const last = await overview(admins[0] as string);
    expect(last.hour.accepted).toBe(6);

    // The spool's maintenance (at start, then every minute) removes what is older than 25 hours.
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      await db.query(`INSERT INTO relay.activity (minute, node, accepted) VALUES (date_trunc('minute', now() - interval '26 hours'), 'gone:1', 7), (date_trunc('minute', now() - interval '24 hours'), 'gone:1', 9)`);
      relays.push(await spawnRelay(['serve', '--config', path.join(dir, 'relay-1.yaml')], {}, 60_000));
      const { rows } = await db.query<{ accepted: number }>(`SELECT accepted FROM relay.activity WHERE node = 'gone:1'`);
      expect(rows).toEqual([{ accepted: 9 }]);
    } finally {
      await db.end();
    }
  }, 180_000);
});
