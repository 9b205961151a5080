/**
 * `db migrate` (apply the shared queue's schema migrations now, e.g. before a rolling upgrade) and
 * `spool import --from DIR` (move a single node's file spool into the shared queue: the upgrade
 * from one node to a cluster). Import is idempotent: a message already in the database is skipped,
 * and each message leaves the file spool only after its commit, so running it twice, or again
 * after a crash, moves everything exactly once.
 */
import { createReadStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { RelayConfig } from '../config/schema.js';
import { FsSpool } from '../spool/fs/fs-spool.js';
import { migrate } from '../spool/postgres/migrations.js';
import { PgSpool } from '../spool/postgres/pg-spool.js';

function shared(config: RelayConfig, err: Writable): PgSpool | null {
  if (config.spool.backend !== 'postgres' || !config.spool.postgres.url) {
    err.write('this command needs spool.backend: postgres and spool.postgres.url in the configuration\n');
    return null;
  }
  return new PgSpool({ url: config.spool.postgres.url });
}

export async function runDbMigrate(config: RelayConfig, out: Writable, err: Writable): Promise<number> {
  const spool = shared(config, err);
  if (!spool) return 64;
  try {
    const result = await migrate(spool.pool);
    out.write(result.applied.length > 0 ? `queue schema migrated from version ${result.from} to ${result.to} (applied ${result.applied.join(', ')})\n` : `queue schema up to date (version ${result.to})\n`);
    return 0;
  } catch (e) {
    err.write(`db migrate failed: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await spool.close();
  }
}

export async function runSpoolImport(config: RelayConfig, fromDir: string | undefined, out: Writable, err: Writable): Promise<number> {
  if (!fromDir) {
    err.write('spool import needs --from DIR (the stopped single-node relay\'s spool.dir)\n');
    return 64;
  }
  const target = shared(config, err);
  if (!target) return 64;
  // Recovery completes what a crash left (journal, interrupted moves) before anything is read.
  const source = new FsSpool(fromDir, undefined, { onError: () => undefined });
  const counts = { queue: 0, failed: 0, skipped: 0 };
  try {
    await migrate(target.pool);
    await source.recover();
    for (const where of ['queue', 'failed'] as const) {
      for (const entry of await source.list(where)) {
        const moved = await source.withMessageFile(entry.id, where, (file) => target.importMessage(entry, where, createReadStream(file)));
        if (moved) counts[where] += 1;
        else counts.skipped += 1;
        // Only once the database has it does the message leave the file spool.
        if (where === 'queue') await source.remove(entry.id);
        else await source.deleteFailed(entry.id);
      }
    }
    out.write(`imported ${counts.queue} waiting and ${counts.failed} failed message(s) from ${fromDir}; ${counts.skipped} already in the database\n`);
    return 0;
  } catch (e) {
    err.write(`spool import stopped: ${(e as Error).message}\nwhat was imported so far is in the database and gone from ${fromDir}; run the same command again to continue\n`);
    return 1;
  } finally {
    await source.close();
    await target.close();
  }
}
