/**
 * The connection pool and its health. Every wait is bounded (node-postgres waits forever by
 * default: connectionTimeoutMillis 0, pg-queues.md §3), so a database that does not answer turns
 * into a 451 within seconds, never a hung sender. Errors on idle clients are caught (an unhandled
 * pool 'error' kills the process). While the database is unreachable a probe runs every second and
 * clears the state by itself.
 */
import pg from 'pg';

/** Connect within 3 s; a statement gets 10 s on the server and 12 s on the client (then the connection is destroyed). */
export const CONNECT_TIMEOUT_MS = 3_000;
export const STATEMENT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 12_000;
const PROBE_INTERVAL_MS = 1_000;

export function createPool(url: string, onError: (err: Error) => void, max = 10): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
    // A node that dies inside a transaction must not keep its row locks (claims) for long.
    idle_in_transaction_session_timeout: 30_000,
    keepAlive: true,
    idleTimeoutMillis: 30_000,
    application_name: 'smtp-graph-relay',
  });
  pool.on('error', onError);
  return pool;
}

/**
 * Errors that mean "the database is not there (or not writable) right now", as opposed to a bug in
 * a statement: connection failures, server shutdown (57P01-03), connection exceptions (08xxx), a
 * read-only standby after failover (25006), timeouts.
 */
export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  const code = e?.code ?? '';
  if (/^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)$/.test(code)) return true;
  if (/^(08|57P0)/.test(code) || code === '25006' || code === '53300') return true;
  return /timeout|Connection terminated|not queryable|Client has encountered a connection error/i.test(e?.message ?? '');
}

export class DatabaseHealth {
  private reason: string | null = null;
  private probe: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly onChange: (down: string | null) => void,
  ) {}

  /** Why the database is unusable right now, or null. */
  get down(): string | null {
    return this.reason;
  }

  /** Records the outcome of a database call: an unavailability error marks the database down. */
  observe(err: unknown): void {
    if (!isUnavailable(err) || this.closed) return;
    const reason = `database unreachable: ${(err as Error).message || (err as { code?: string }).code}`;
    if (this.reason === null) this.onChange(reason);
    this.reason = reason;
    this.probe ??= setInterval(() => void this.check(), PROBE_INTERVAL_MS);
    this.probe.unref();
  }

  private async check(): Promise<void> {
    try {
      const { rows } = await this.pool.query<{ ro: boolean }>('SELECT pg_is_in_recovery() AS ro');
      if (rows[0]?.ro) throw Object.assign(new Error('the database is a read-only standby'), { code: '25006' });
      this.up();
    } catch (err) {
      if (isUnavailable(err)) this.reason = `database unreachable: ${(err as Error).message || (err as { code?: string }).code}`;
    }
  }

  up(): void {
    if (this.probe) clearInterval(this.probe);
    this.probe = null;
    if (this.reason !== null) {
      this.reason = null;
      this.onChange(null);
    }
  }

  close(): void {
    this.closed = true;
    if (this.probe) clearInterval(this.probe);
    this.probe = null;
  }
}
