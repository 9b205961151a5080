/**
 * Prometheus metrics (prom-client) on a registry of our own (several relays can live in one test
 * process). Counters are bumped at the lifecycle events; gauges are read from the scheduler and
 * spool at scrape time, so they cannot drift.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface QueueSnapshot {
  depth: number;
  oldestAgeSeconds: number;
  held: number;
  inFlightByMailbox: Map<string, number>;
}

export class RelayMetrics {
  readonly registry = new Registry();
  readonly received: Counter<'result'>;
  readonly refused: Counter<'reason'>;
  readonly delivered: Counter<'mailbox'>;
  readonly deferred: Counter<'kind' | 'status'>;
  readonly failed: Counter<'reason'>;
  readonly throttled: Counter<'mailbox'>;
  readonly graphLatency: Histogram<'status'>;
  readonly tokenAcquisitions: Counter<'result'>;
  readonly quarantined: Counter<'area'>;

  constructor(snapshot: () => QueueSnapshot, failedCount: () => Promise<number>) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'relay_process_' });
    this.received = new Counter({ name: 'relay_messages_received_total', help: 'SMTP messages accepted into the spool (result="queued") or refused after DATA', labelNames: ['result'], registers });
    this.refused = new Counter({ name: 'relay_smtp_refused_total', help: 'SMTP refusals by reason', labelNames: ['reason'], registers });
    this.delivered = new Counter({ name: 'relay_messages_delivered_total', help: 'Messages Graph accepted (202)', labelNames: ['mailbox'], registers });
    this.deferred = new Counter({ name: 'relay_messages_deferred_total', help: 'Attempts that will be retried, by kind (transient|operator) and HTTP status', labelNames: ['kind', 'status'], registers });
    this.failed = new Counter({ name: 'relay_messages_failed_total', help: 'Messages moved to failed/, by reason (permanent|expired)', labelNames: ['reason'], registers });
    this.throttled = new Counter({ name: 'relay_graph_throttled_total', help: 'HTTP 429 answers from Graph', labelNames: ['mailbox'], registers });
    this.graphLatency = new Histogram({
      name: 'relay_graph_request_duration_seconds',
      help: 'Graph sendMail request latency',
      labelNames: ['status'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.tokenAcquisitions = new Counter({ name: 'relay_token_acquisitions_total', help: 'Token requests by result (ok|error)', labelNames: ['result'], registers });
    this.quarantined = new Counter({ name: 'relay_spool_quarantined_total', help: 'Spool files moved to corrupt/ at start, by area (journal: a damaged segment, acknowledged mail may be lost)', labelNames: ['area'], registers });
    const latest = { value: null as QueueSnapshot | null };
    const read = () => (latest.value ??= snapshot());
    new Gauge({
      name: 'relay_queue_depth',
      help: 'Messages waiting in queue/ (including held)',
      registers,
      collect() {
        latest.value = null;
        this.set(read().depth);
      },
    });
    new Gauge({ name: 'relay_queue_oldest_age_seconds', help: 'Age of the oldest queued message', registers, collect() { this.set(read().oldestAgeSeconds); } });
    new Gauge({
      name: 'relay_queue_failed',
      help: 'Messages in failed/',
      registers,
      async collect() {
        this.set(await failedCount());
      },
    });
    new Gauge({ name: 'relay_queue_held', help: 'Messages on hold', registers, collect() { this.set(read().held); } });
    new Gauge({
      name: 'relay_graph_in_flight',
      help: 'Graph requests in flight per mailbox',
      labelNames: ['mailbox'],
      registers,
      collect() {
        this.reset();
        for (const [mailbox, n] of read().inFlightByMailbox) this.set({ mailbox }, n);
      },
    });
  }
}
