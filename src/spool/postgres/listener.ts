/**
 * LISTEN on a dedicated connection (never a pooled one: a pooled client is handed to others, and a
 * transaction-mode PgBouncer would drop the subscription). NOTIFY is only a latency hint: nothing
 * is replayed to a session that was not listening, so every (re)connect calls onConnected and the
 * owner sweeps the queue; a slow poll stays the safety net (pg-queues.md §1, pg-boss, graphile).
 */
import pg from 'pg';
import { CONNECT_TIMEOUT_MS } from './pg-connection.js';

export const CHANNEL = 'smtp_graph_relay';

export class NotificationListener {
  private client: pg.Client | null = null;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  private failures = 0;

  constructor(
    private readonly url: string,
    private readonly onMessage: (payload: string) => void,
    private readonly onConnected: () => void,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    void this.connect();
  }

  /** LISTEN is in force now: what other nodes NOTIFY reaches this one as they say it. */
  get hearing(): boolean {
    return this.client !== null;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, application_name: 'smtp-graph-relay-listen' });
    let lost = false;
    const reconnect = () => {
      if (lost) return;
      lost = true;
      if (this.client === client) this.client = null;
      void client.end().catch(() => undefined);
      this.schedule();
    };
    client.on('error', reconnect);
    client.on('end', reconnect);
    client.on('notification', (n) => this.onMessage(n.payload ?? ''));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      this.client = client;
      this.failures = 0;
      this.onConnected();
    } catch {
      reconnect();
    }
  }

  /** Jittered backoff from 0.5 s up to 5 s, so a restarted database is not hit by every node at once. */
  private schedule(): void {
    if (this.stopped || this.retry) return;
    this.failures += 1;
    const delay = Math.min(5_000, 500 * 2 ** Math.min(this.failures - 1, 4)) * (0.5 + this.random() / 2);
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.connect();
    }, delay);
    this.retry.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}
