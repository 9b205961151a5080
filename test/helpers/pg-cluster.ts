/**
 * A throwaway PostgreSQL server for tests: initdb in a temp directory, pg_ctl on a free loopback
 * port, stopped and removed by stop(). No system service is used. PostgreSQL refuses to run as
 * root, so under root the server runs as the `postgres` user (Debian's package creates it) and
 * the data directory is handed to that user.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './free-port.js';

const run = promisify(execFile);

export interface PgCluster {
  url: string;
  port: number;
  dataDir: string;
  /** A fresh, empty database on this server (one per test file or test), with its URL. */
  createDatabase(name?: string): Promise<string>;
  /** `pg_ctl restart -m fast`: every connection is cut, the server is back when this resolves. */
  restart(): Promise<void>;
  /** `pg_ctl stop -m fast` (start() brings it back on the same port). */
  stopServer(): Promise<void>;
  startServer(): Promise<void>;
  stop(): Promise<void>;
}

/** The newest PostgreSQL bin directory of Debian's layout (/usr/lib/postgresql/N/bin), or PATH. */
export function postgresBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return path.join(root, versions[0], 'bin');
  }
  return null;
}

export async function startPgCluster(): Promise<PgCluster> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install Debian\'s postgresql package (.ci/run does)');
  const asRoot = process.getuid?.() === 0;
  const base = await mkdtemp(path.join(os.tmpdir(), 'sgr-pg-'));
  const dataDir = path.join(base, 'data');
  const logFile = path.join(base, 'server.log');
  let uid = 0;
  let gid = 0;
  if (asRoot) {
    const ids = await run('id', ['-u', 'postgres']).then((r) => Number(r.stdout.trim()));
    const group = await run('id', ['-g', 'postgres']).then((r) => Number(r.stdout.trim()));
    uid = ids;
    gid = group;
    await chmod(base, 0o755);
    await chown(base, uid, gid);
  }
  // Every command gets its own timeout: a hung server start must fail the test, not hang it.
  const pgRun = (tool: string, args: string[], timeout = 60_000) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', path.join(bin, tool), ...args], { timeout }) : run(path.join(bin, tool), args, { timeout });
  await pgRun('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  const port = await freePort();
  // Loopback only; the socket directory is the temp dir (never /var/run/postgresql).
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${base} -c max_connections=200 -c fsync=on`;
  const startServer = async () => {
    await pgRun('pg_ctl', ['-D', dataDir, '-l', logFile, '-o', options, '-w', '-t', '60', 'start']);
  };
  const stopServer = async () => {
    await pgRun('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']);
  };
  await startServer();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let counter = 0;
  return {
    url,
    port,
    dataDir,
    async createDatabase(name) {
      counter += 1;
      const db = name ?? `relay_${process.pid}_${counter}`;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(db)}`);
      } finally {
        await client.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${db}`;
    },
    async restart() {
      await pgRun('pg_ctl', ['-D', dataDir, '-l', logFile, '-o', options, '-m', 'fast', '-w', '-t', '60', 'restart']);
    },
    stopServer,
    startServer,
    async stop() {
      await stopServer().catch(() => undefined);
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** One statement on its own connection: its rows (for a test's look into the database). */
export async function queryRows<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text)).rows;
  } finally {
    await client.end();
  }
}
