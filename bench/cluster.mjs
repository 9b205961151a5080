// Figures 6-8 (issue 13): the shared PostgreSQL queue, measured in the same run as figures 1-5.
//   6. intake on PostgreSQL (one node) vs the file spool (figure 2's relay, re-measured here) and vs
//      a bare INSERT ... COMMIT floor on the same database (8 clients, one 10 KB row per commit)
//   7. three nodes' aggregate intake on one database
//   8. delivery with three nodes and one mailbox (target 0.95-1.0x of 4 / 100 ms = 40 msg/s, 0
//      self-inflicted 429s), and with three mailboxes (3 x 40 msg/s allowed)
// The database is a throwaway server started here (initdb + pg_ctl on a free loopback port, as the
// tests do); without PostgreSQL's binaries the figures are reported as skipped.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort } from './free-port.mjs';

function binDir() {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : null;
}

/** A throwaway server with the defaults a production server has (fsync on, synchronous_commit on). */
async function startServer(work) {
  const bin = binDir();
  if (!bin) return null;
  // Its own temp dir (the bench's is 0700 root-owned; the server runs as postgres when we are root).
  const base = mkdtempSync(path.join(os.tmpdir(), 'sgr-bench-pg-'));
  chmodSync(base, 0o755);
  const asRoot = process.getuid?.() === 0;
  const run = (tool, args) => execFileSync(asRoot ? 'runuser' : path.join(bin, tool), asRoot ? ['-u', 'postgres', '--', path.join(bin, tool), ...args] : args, { timeout: 60_000, stdio: 'pipe' });
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(base, uid, gid);
  }
  const data = path.join(base, 'data');
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  const port = await freePort();
  // BENCH_PG_STATEMENTS=1: the server tracks every statement (functions' too), and figure 6 prints
  // where the database's time went (pg_stat_statements, part of Debian's postgresql package).
  const statements = process.env.BENCH_PG_STATEMENTS === '1' ? ' -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all' : '';
  run('pg_ctl', ['-D', data, '-l', path.join(base, 'log'), '-o', `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${base} -c max_connections=200${statements}`, '-w', 'start']);
  let n = 0;
  return {
    /**
     * Drops the databases of earlier figures, flushes the server's dirty pages (CHECKPOINT) and the
     * machine's (sync): what earlier figures left to clean up (autovacuum of ten thousand deleted
     * messages, a checkpoint, the file spools' writeback) does not run inside the next figure.
     */
    async settle() {
      const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
      await admin.connect();
      try {
        for (let i = 1; i <= n; i++) await admin.query(`DROP DATABASE IF EXISTS bench_${i} WITH (FORCE)`);
        await admin.query('CHECKPOINT');
      } finally {
        await admin.end();
      }
      execFileSync('sync');
    },
    async database() {
      n += 1;
      const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
      await admin.connect();
      await admin.query(`CREATE DATABASE bench_${n}`);
      await admin.end();
      return `postgres://postgres@127.0.0.1:${port}/bench_${n}`;
    },
    stop: () => {
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } finally {
        rmSync(base, { recursive: true, force: true });
      }
    },
  };
}

/**
 * CPU used by the PostgreSQL server so far (every postgres process, user + kernel, with the ticks
 * of backends that have exited, which the postmaster collects): the database's part of a figure.
 * The bench's server is the only PostgreSQL running while it measures.
 */
function postgresCpuTicks() {
  let ticks = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks;
}

/** The statements that took the database's time, per message (BENCH_PG_STATEMENTS=1). */
async function printTopStatements(url, messages) {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const { rows } = await db.query(`SELECT calls, total_exec_time AS ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`);
    for (const r of rows) console.error(`  pg: ${((r.ms * 1000) / messages).toFixed(0).padStart(6)} us/msg ${String(r.calls).padStart(7)} calls  ${r.q}`);
    await db.query('SELECT pg_stat_statements_reset()');
  } finally {
    await db.end();
  }
}

/** The floor: 8 clients, each committing one 10 KB row per transaction (what 250-after-COMMIT costs at least). */
async function insertFloor(url, count, bytes) {
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  await setup.query('CREATE TABLE floor (id bigserial PRIMARY KEY, data bytea NOT NULL)');
  await setup.end();
  const payload = Buffer.alloc(bytes, 120);
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      while (next < count) {
        next += 1;
        await client.query('INSERT INTO floor (data) VALUES ($1)', [payload]);
      }
      await client.end();
    }),
  );
  return count / ((performance.now() - start) / 1000);
}

/**
 * What Graph saw of one run, from its requests (emulator.mail.requests, all answered): the span from
 * the first request to the last answer, how full the slots were over it, the mean answer time, and
 * the idle time of a slot between an answer and the next request that took it.
 */
function graphSeen(requests, slots) {
  const spans = requests.filter((q) => q.doneAt !== undefined);
  // The rate Graph sees, from the first request to the last answer: the sustained delivery the
  // target is about.
  const firstAt = spans.reduce((m, q) => Math.min(m, q.at), Infinity);
  const lastDone = spans.reduce((m, q) => Math.max(m, q.doneAt), 0);
  const spanSec = (lastDone - firstAt) / 1000;
  // How full the slots were kept: time with an answer pending, over slots x span.
  const busy = spans.reduce((sum, q) => sum + (q.doneAt - q.at), 0);
  const occupancy = busy / (slots * spanSec * 1000);
  const meanAnswerMs = busy / Math.max(1, spans.length);
  // Each request takes the slot the earliest unclaimed answer before it freed: the time between
  // them is what the slot spent idle, the client's (and the loopback's) part of every cycle.
  const freed = [];
  const gaps = [];
  for (const q of [...spans].sort((a, b) => a.at - b.at)) {
    if (freed.length > 0 && freed[0] <= q.at) gaps.push(q.at - freed.shift());
    freed.push(q.doneAt);
    freed.sort((a, b) => a - b);
  }
  gaps.sort((a, b) => a - b);
  const gapMs = { mean: gaps.reduce((a, b) => a + b, 0) / Math.max(1, gaps.length), p50: gaps[Math.floor(gaps.length / 2)] ?? 0, p90: gaps[Math.floor(gaps.length * 0.9)] ?? 0, max: gaps[gaps.length - 1] ?? 0 };
  return { answered: spans.length, firstAt, lastDone, spanSec, occupancy, meanAnswerMs, gapMs };
}

/**
 * Figure 8's floor (bench/graph-floor.mjs): a bare client's rate against the same emulator, for one
 * mailbox, counted as figure 8 is. Its own process, like a relay.
 */
async function graphFloor(emulator, graph, caFile, count, messageBytes) {
  emulator.mail.forgetHistory();
  const child = spawn(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'graph-floor.mjs'), graph.endpoint, graph.tenantId, graph.clientId, graph.auth.clientSecret, graph.mailbox, String(count), String(messageBytes)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // 40 msg/s at best: a run that takes 20 times as long has gone wrong.
  const timeout = setTimeout(() => child.kill('SIGKILL'), 30_000 + count * 500);
  let out = '';
  child.stdout.on('data', (d) => (out += d.toString()));
  const code = await new Promise((resolve) => {
    child.on('error', () => resolve(-1));
    child.on('close', resolve);
  });
  clearTimeout(timeout);
  const go = Number(/^go (\d+)/m.exec(out)?.[1]);
  if (code !== 0 || !go) return { error: `bench/graph-floor.mjs failed (exit ${code})` };
  const seen = graphSeen(emulator.mail.requests.filter((q) => q.at >= go && q.mailbox === graph.mailbox), emulator.mail.concurrencyLimit);
  const limit = emulator.mail.concurrencyLimit / (emulator.mail.latencyMs / 1000);
  return { msgPerSec: seen.answered / seen.spanSec, ratio: seen.answered / seen.spanSec / limit, meanAnswerMs: seen.meanAnswerMs, gapMs: seen.gapMs };
}

/**
 * @param {object} ctx the bench's own helpers: startRelay(extra), nodeLoad(port, count, reuse), emulator, counts, messageBytes, work, graph (the relay's graph section)
 */
export async function clusterFigures(ctx) {
  const { startRelay, nodeLoad, emulator, counts, messageBytes, work, graph, caFile, deliveryOnly, intakeOnly, cpuUs, tickUs } = ctx;
  const server = await startServer(work);
  if (!server) return { skipped: 'PostgreSQL server binaries not found (Debian package postgresql)' };
  const pgSpool = (url) => ({ spool: { dir: path.join(work, 'unused'), backend: 'postgres', postgres: { url, leaseTimeout: '30s' } } });
  const stopAll = (relays) => Promise.all(relays.map((r) => r.stop()));
  try {
    const out = {};
    if (!deliveryOnly) {
      // 6. one node: PostgreSQL vs the file spool vs the bare floor, same load (8 sessions, reused connections).
      const fsRelay = await startRelay();
      const fsRate = (await nodeLoad(fsRelay.port, counts.intake, true)).msgPerSec;
      await fsRelay.stop();
      const one = await startRelay(pgSpool(await server.database()));
      const [relayCpu, dbCpu] = [cpuUs(one.pid), postgresCpuTicks()];
      const pgRate = (await nodeLoad(one.port, counts.intake, true)).msgPerSec;
      // What each message cost the relay and the database (user + kernel): where intake's time goes.
      const cpuUsPerMsg = { relay: (cpuUs(one.pid) - relayCpu) / counts.intake, postgres: ((postgresCpuTicks() - dbCpu) * tickUs) / counts.intake };
      await one.stop();
      if (process.env.BENCH_PG_STATEMENTS === '1') await printTopStatements(await server.database(), counts.intake);
      const floorRate = await insertFloor(await server.database(), counts.intake, messageBytes);
      out.intakeOneNode = { postgresMsgPerSec: pgRate, filesystemMsgPerSec: fsRate, insertCommitFloorMsgPerSec: floorRate, vsFilesystem: pgRate / fsRate, vsFloor: pgRate / floorRate, cpuUsPerMsg };

      // 7. three nodes on one database, load spread evenly (8 sessions each).
      const url3 = await server.database();
      const three = [];
      for (let i = 0; i < 3; i++) three.push(await startRelay(pgSpool(url3)));
      const t0 = performance.now();
      await Promise.all(three.map((r) => nodeLoad(r.port, Math.floor(counts.intake / 3), true)));
      const aggregate = (3 * Math.floor(counts.intake / 3)) / ((performance.now() - t0) / 1000);
      await stopAll(three);
      out.intakeThreeNodes = { aggregateMsgPerSec: aggregate, vsOneNode: aggregate / pgRate };
    }
    if (intakeOnly) return out;

    // 8a. delivery, three nodes, one mailbox: the cluster must fill Graph's 4 slots and never exceed them.
    // The messages are all accepted first, with the mailboxes paused in the database (the pause every
    // node honours), so the figure is delivery alone, not intake on this shared machine; the clock
    // starts when the pause is lifted.
    const deliver = async (mailboxes) => {
      // The emulator (in this process) forgets the earlier figures' messages, and the database and
      // disks finish their work for them, before delivery is timed.
      const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
      emulator.mail.forgetHistory();
      await server.settle();
      const url = await server.database();
      const nodes = [];
      for (let i = 0; i < 3; i++) nodes.push(await startRelay({ ...pgSpool(url), graph: { ...graph, mailbox: mailboxes[i % mailboxes.length] } }));
      const db = new pg.Client({ connectionString: url });
      await db.connect();
      // Warm-up: each node delivers a few messages first, as a relay in service has (its token, its
      // connections to Graph and the database, compiled code). Cold, the first requests left 120-210 ms
      // after the start and the second round 55-85 ms after the first answers: start-up, not throughput.
      const warm = emulator.mail.delivered.length;
      await Promise.all(nodes.map((n) => nodeLoad(n.port, 8, true)));
      await emulator.mail.waitForDelivered(warm + 8 * nodes.length, 60_000);
      for (const m of mailboxes) await db.query(`INSERT INTO relay.mailboxes (mailbox, paused_until) VALUES ($1, now() + interval '1 hour') ON CONFLICT (mailbox) DO UPDATE SET paused_until = EXCLUDED.paused_until`, [m]);
      const before = emulator.mail.delivered.length;
      const throttles = emulator.mail.concurrencyThrottles;
      const total = counts.delivery * mailboxes.length;
      await Promise.all(nodes.map((n) => nodeLoad(n.port, Math.floor(total / 3), true)));
      const cpuBefore = nodes.reduce((sum, n) => sum + cpuUs(n.pid), 0);
      const connectionsBefore = emulator.connectionPorts.length;
      if (process.env.BENCH_PG_STATEMENTS === '1') await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements').then(() => db.query('SELECT pg_stat_statements_reset()'));
      const start = Date.now();
      await db.query(`UPDATE relay.mailboxes SET paused_until = NULL`);
      await db.query(`SELECT pg_notify('smtp_graph_relay', 'wake')`);
      await db.end();
      await emulator.mail.waitForDelivered(before + 3 * Math.floor(total / 3), 300_000);
      // A message counts as delivered when the emulator takes it, ~100 ms before its answer leaves:
      // wait for every answer, or the last requests fall out of the span and the rate comes out
      // higher than Graph allows (seen in the smoke run: 22 of 24 answered, 1.07-1.12x).
      const ours = () => emulator.mail.requests.filter((q) => q.at >= start && mailboxes.includes(q.mailbox ?? ''));
      for (const deadline = Date.now() + 10_000; ours().some((q) => q.doneAt === undefined) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      const batch = emulator.mail.delivered.slice(before);
      const connectionsOpened = emulator.connectionPorts.length - connectionsBefore;
      // The relays' own work per delivered message (user + kernel, all three): what a cycle costs them.
      const relayCpuUsPerMsg = (nodes.reduce((sum, n) => sum + cpuUs(n.pid), 0) - cpuBefore) / batch.length;
      const limit = (mailboxes.length * emulator.mail.concurrencyLimit) / (emulator.mail.latencyMs / 1000);
      if (process.env.BENCH_PG_STATEMENTS === '1') await printTopStatements(url, batch.length);
      await stopAll(nodes);
      const seen = graphSeen(ours(), mailboxes.length * emulator.mail.concurrencyLimit);
      const rate = batch.length / seen.spanSec;
      const fromUnpauseRate = batch.length / ((seen.lastDone - start) / 1000);
      const { occupancy, meanAnswerMs } = seen;
      const gapMs = { ...seen.gapMs, startMs: seen.firstAt - start };
      return { connectionsOpened, emulatorHeapMbBefore: heapBefore / 2 ** 20, msgPerSec: rate, graphLimitMsgPerSec: limit, ratio: rate / limit, fromUnpauseRatio: fromUnpauseRate / limit, occupancy, meanAnswerMs, gapMs, relayCpuUsPerMsg, selfInflicted429: emulator.mail.concurrencyThrottles - throttles, maxInFlight: Math.max(...mailboxes.map((m) => emulator.mail.maxInFlightSeen.get(m) ?? 0)) };
    };
    // Its floor first: what a client with nothing else to do reaches against the same emulator.
    out.deliveryFloor = await graphFloor(emulator, graph, caFile, counts.delivery, messageBytes);
    out.deliveryThreeNodesOneMailbox = { ...(await deliver(['relay@bench.example'])), target: [0.95, 1.0] };
    for (const m of ['second@bench.example', 'third@bench.example']) emulator.mail.addMailbox({ upn: m, displayName: m });
    out.deliveryThreeNodesThreeMailboxes = await deliver(['relay@bench.example', 'second@bench.example', 'third@bench.example']);
    return out;
  } finally {
    server.stop();
  }
}

/** Report lines for figures 6-8. */
export function clusterReport(c, f, ok) {
  if (!c || c.skipped) return [`6-8. PostgreSQL cluster figures skipped: ${c?.skipped ?? 'not run'}`];
  const d1 = c.deliveryThreeNodesOneMailbox;
  const d3 = c.deliveryThreeNodesThreeMailboxes;
  const intake = c.intakeOneNode ? [
    `6. intake on PostgreSQL, one node, reused connections: ${f(c.intakeOneNode.postgresMsgPerSec, 0)} msg/s = ${f(c.intakeOneNode.vsFilesystem * 100)} % of the file spool (${f(c.intakeOneNode.filesystemMsgPerSec, 0)} msg/s), ${f(c.intakeOneNode.vsFloor * 100)} % of a bare INSERT ... COMMIT floor (${f(c.intakeOneNode.insertCommitFloorMsgPerSec, 0)} rows/s, 8 clients); CPU per message: relay ${f(c.intakeOneNode.cpuUsPerMsg?.relay ?? 0, 0)} us, PostgreSQL ${f(c.intakeOneNode.cpuUsPerMsg?.postgres ?? 0, 0)} us`,
    `7. intake, three nodes on one database: ${f(c.intakeThreeNodes.aggregateMsgPerSec, 0)} msg/s together = ${f(c.intakeThreeNodes.vsOneNode, 2)}x one node`,
  ] : [];
  if (!d1) return intake;
  return [
    ...intake,
    `8. delivery, three nodes, one mailbox: ${f(d1.msgPerSec)} msg/s of ${f(d1.graphLimitMsgPerSec, 0)} allowed = ${f(d1.ratio, 3)}x (target 0.95-1.0x: ${ok(d1.ratio >= 0.95 && d1.ratio <= 1.0)}); self-inflicted 429s ${d1.selfInflicted429}; max in flight ${d1.maxInFlight}; slots busy ${f((d1.occupancy ?? 0) * 100)} % of the time, answers in ${f(d1.meanAnswerMs ?? 0, 1)} ms on average, a freed slot's next request ${f(d1.gapMs?.mean ?? 0, 1)} ms after the answer (p50 ${f(d1.gapMs?.p50 ?? 0, 1)}, p90 ${f(d1.gapMs?.p90 ?? 0, 1)}, max ${f(d1.gapMs?.max ?? 0, 0)}), first request ${f(d1.gapMs?.startMs ?? 0, 0)} ms after the unpause (the emulator held ${f(d1.emulatorHeapMbBefore ?? 0, 0)} MB of earlier figures' messages, forgotten first) (counted from there: ${f(d1.fromUnpauseRatio ?? 0, 3)}x); relays' CPU ${f(d1.relayCpuUsPerMsg ?? 0, 0)} us per message; ${d1.connectionsOpened ?? 0} connections to Graph opened during the run`,
    ...(c.deliveryFloor?.error ? [`   its floor: not measured (${c.deliveryFloor.error})`] : []),
    ...(c.deliveryFloor && !c.deliveryFloor.error ? [`   its floor: a bare HTTPS client (no spool, no database; 4 loops in one process) against the same emulator: ${f(c.deliveryFloor.msgPerSec)} msg/s = ${f(c.deliveryFloor.ratio, 3)}x of the limit, answers in ${f(c.deliveryFloor.meanAnswerMs, 1)} ms, next request ${f(c.deliveryFloor.gapMs.mean, 1)} ms after the answer (p90 ${f(c.deliveryFloor.gapMs.p90, 1)}); the three relays reached ${f(d1.ratio / c.deliveryFloor.ratio, 3)}x of it`] : []),
    `   three nodes, three mailboxes: ${f(d3.msgPerSec)} msg/s of ${f(d3.graphLimitMsgPerSec, 0)} allowed = ${f(d3.ratio, 3)}x; self-inflicted 429s ${d3.selfInflicted429}; max in flight per mailbox ${d3.maxInFlight}; slots busy ${f((d3.occupancy ?? 0) * 100)} %, answers in ${f(d3.meanAnswerMs ?? 0, 1)} ms, a freed slot's next request ${f(d3.gapMs?.mean ?? 0, 1)} ms after the answer (p90 ${f(d3.gapMs?.p90 ?? 0, 1)}); ${d3.connectionsOpened ?? 0} connections to Graph opened`,
  ];
}
