/**
 * The spool spool.backend names: the file spool under spool.dir, or the shared PostgreSQL queue
 * (migrated first, under its advisory lock, so several nodes starting at once is safe).
 */
import type { RelayConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { FsSpool } from './fs/fs-spool.js';
import { realSpoolFs } from './fs/spool-fs.js';
import type { Spool } from './spool.js';

export async function openSpool(config: RelayConfig, logger: Logger, now: () => number = Date.now): Promise<Spool> {
  if (config.spool.backend === 'postgres') {
    // Loaded only here: a single relay on its file spool does not pay for the PostgreSQL client at start.
    const [{ PgSpool }, { migrate }] = await Promise.all([import('./postgres/pg-spool.js'), import('./postgres/migrations.js')]);
    const spool = new PgSpool({
      url: config.spool.postgres.url as string,
      onError: (event, err) => logger.error({ event, err: err.message }, 'spool background work failed; it is retried'),
      onAvailability: (down) =>
        down === null
          ? logger.info({ event: 'spool.database_available' }, 'database reachable again: intake and delivery resume')
          : logger.error({ event: 'spool.database_unavailable', reason: down }, 'database unreachable: intake answers 451 4.3.0, delivery paused'),
      onNotice: (event, fields) => logger.warn({ event, ...fields }, "this relay's clock differs from the database's: queue times are converted, but set up NTP on this host"),
      now,
    });
    try {
      const result = await migrate(spool.pool);
      logger.info({ event: 'spool.migrated', from: result.from, to: result.to, applied: result.applied }, result.applied.length > 0 ? 'queue schema migrated' : 'queue schema up to date');
    } catch (err) {
      await spool.close();
      throw err;
    }
    return spool;
  }
  return new FsSpool(config.spool.dir, realSpoolFs, {
    journal: config.spool.journal,
    now,
    onError: (event, err) => logger.error({ event, err: err.message }, 'spool background work failed; the message stays in the journal and is retried'),
    onNotice: (event, fields) => logger.warn({ event, ...fields }, 'the previous relay on this spool did not stop cleanly; its lock was taken over'),
  });
}
