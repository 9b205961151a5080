/** The console's in-memory record: per-minute counts over a day, depth samples, recent events. */
import { describe, expect, it } from 'vitest';
import { Activity, addInto, DAY_MINUTES, EVENT_CAPACITY, MINUTE_MS, PendingCounts, seriesFrom, totalsOf, type MinuteBucket } from '../../src/console/activity.js';
import { SharedActivity } from '../../src/console/shared-activity.js';
import type { ActivityStore, MinuteCounts } from '../../src/spool/spool.js';
import { niceMax } from '../../src/console/chart.js';
import { escapeHtml, html } from '../../src/console/html.js';

const line = (event: string, extra: Record<string, unknown> = {}) => JSON.stringify({ level: 'info', time: 't', service: 'smtp-graph-relay', event, ...extra });

describe('activity', () => {
  it('counts lifecycle events per minute and forgets what is older than a day', () => {
    let now = 10 * DAY_MINUTES * MINUTE_MS;
    const a = new Activity(() => now);
    a.recordLine(line('smtp.accepted'));
    a.recordLine(line('delivery.delivered'));
    a.recordLine(line('delivery.deferred'));
    a.recordLine('not json');
    a.recordLine(JSON.stringify({ msg: 'no event' }));
    expect(a.totals(60)).toEqual({ accepted: 1, delivered: 1, deferred: 1, failed: 0 });
    now += 90 * MINUTE_MS;
    a.recordLine(line('delivery.failed'));
    expect(a.totals(60)).toEqual({ accepted: 0, delivered: 0, deferred: 0, failed: 1 });
    expect(a.totals(DAY_MINUTES)).toEqual({ accepted: 1, delivered: 1, deferred: 1, failed: 1 });
    const series = a.series();
    expect(series).toHaveLength(DAY_MINUTES);
    expect(series[DAY_MINUTES - 1]?.failed).toBe(1);
    expect(series[DAY_MINUTES - 91]?.delivered).toBe(1);
    now += DAY_MINUTES * MINUTE_MS;
    expect(a.totals(DAY_MINUTES)).toEqual({ accepted: 0, delivered: 0, deferred: 0, failed: 0 });
  });

  it('keeps the highest depth sampled in a minute, and null where none was', () => {
    const now = 1000 * MINUTE_MS;
    const a = new Activity(() => now);
    a.sampleDepth(3);
    a.sampleDepth(7);
    a.sampleDepth(2);
    const series = a.series(2);
    expect(series.map((b) => b.depth)).toEqual([null, 7]);
  });

  it('keeps the last few hundred events, newest first, and finds those about a message', () => {
    const a = new Activity(() => 0);
    for (let i = 0; i < EVENT_CAPACITY + 20; i += 1) a.recordLine(line('smtp.accepted', { queueId: `Q${i}` }));
    a.recordLine(line('bounce.queued', { queueId: 'B1', about: 'Q519' }));
    const recent = a.recent(3);
    expect(recent.map((r) => r.event)).toEqual(['bounce.queued', 'smtp.accepted', 'smtp.accepted']);
    expect(recent[0]?.service).toBeUndefined();
    expect(a.recent().length).toBe(EVENT_CAPACITY);
    expect(a.about('Q519').map((r) => r.event)).toEqual(['smtp.accepted', 'bounce.queued']);
    expect(a.about('Q0')).toEqual([]);
  });
});

describe('html', () => {
  it('escapes every interpolated value unless it is markup', () => {
    expect(html`<p>${'<script>"x"</script>'}</p>`.text).toBe('<p>&lt;script&gt;&quot;x&quot;&lt;/script&gt;</p>');
    expect(html`<p>${html`<b>${'&'}</b>`}</p>`.text).toBe('<p><b>&amp;</b></p>');
    expect(html`${['<a>', html`<i></i>`]}`.text).toBe('&lt;a&gt;<i></i>');
    expect(escapeHtml("'")).toBe('&#39;');
  });

  it('rounds chart maxima to 1, 2 or 5 times a power of ten', () => {
    expect([0, 1, 3, 7, 12, 180, 2001].map(niceMax)).toEqual([1, 1, 5, 10, 20, 200, 5000]);
  });
});

const bucket = (minute: number, fields: Partial<MinuteBucket> = {}): MinuteBucket => ({ minute, accepted: 0, delivered: 0, deferred: 0, failed: 0, depth: null, ...fields });

/** The shared store's contract in memory: rows per (minute, node), counts added, depth the highest. */
class MemoryStore implements ActivityStore {
  readonly rows = new Map<string, MinuteCounts>();
  failNext = 0;
  constructor(private readonly node: string) {}
  forNode(node: string): MemoryStore {
    const other = new MemoryStore(node);
    (other as { rows: Map<string, MinuteCounts> }).rows = this.rows;
    return other;
  }
  async add(counts: readonly MinuteCounts[]): Promise<void> {
    if (this.failNext > 0) {
      this.failNext -= 1;
      throw new Error('database unreachable');
    }
    for (const c of counts) {
      const key = `${c.minute}|${this.node}`;
      const row = this.rows.get(key) ?? bucket(c.minute);
      this.rows.set(key, { ...row, accepted: row.accepted + c.accepted, delivered: row.delivered + c.delivered, deferred: row.deferred + c.deferred, failed: row.failed + c.failed, depth: c.depth === null ? row.depth : Math.max(row.depth ?? 0, c.depth) });
    }
  }
  async read(sinceMinute: number): Promise<MinuteCounts[]> {
    const sums = new Map<number, MinuteCounts>();
    for (const row of this.rows.values()) if (row.minute >= sinceMinute) sums.set(row.minute, addInto(sums.get(row.minute) ?? bucket(row.minute), row));
    return [...sums.values()];
  }
}

describe('cluster-wide figures (PostgreSQL spool)', () => {
  it('adds up several lists per minute, keeps the highest depth, and leaves out what is outside the window', () => {
    const series = seriesFrom(
      [
        [bucket(100, { accepted: 2, depth: 5 }), bucket(103, { delivered: 1 }), bucket(90, { accepted: 50 })],
        [bucket(100, { accepted: 3, delivered: 1, depth: 9 }), bucket(104, { failed: 7 })],
      ],
      103,
      4,
    );
    expect(series.map((b) => b.minute)).toEqual([100, 101, 102, 103]);
    expect(series[0]).toEqual(bucket(100, { accepted: 5, delivered: 1, depth: 9 }));
    expect(series[1]?.depth).toBeNull();
    expect(totalsOf(series)).toEqual({ accepted: 5, delivered: 2, deferred: 0, failed: 0 });
  });

  it('hands each count to the store once: taken in a batch, put back when the write fails', () => {
    const pending = new PendingCounts();
    pending.count(10, 'accepted');
    pending.count(10, 'accepted');
    pending.depth(11, 4);
    const batch = pending.take();
    expect(batch).toEqual([bucket(10, { accepted: 2 }), bucket(11, { depth: 4 })]);
    expect(pending.take()).toEqual([]);
    pending.count(10, 'delivered');
    pending.restore(batch);
    expect(pending.peek()).toEqual([bucket(10, { accepted: 2, delivered: 1 }), bucket(11, { depth: 4 })]);
  });

  it("shows every node's stored counts plus this node's not yet stored, and retries a failed write without counting twice", async () => {
    let now = 1000 * MINUTE_MS;
    const storeA = new MemoryStore('a');
    const storeB = storeA.forNode('b');
    const a = new Activity(() => now, new PendingCounts());
    const b = new Activity(() => now, new PendingCounts());
    const errors: string[] = [];
    const sharedA = new SharedActivity(storeA, a as Activity & { pending: PendingCounts }, (err) => errors.push(err.message));
    const sharedB = new SharedActivity(storeB, b as Activity & { pending: PendingCounts }, (err) => errors.push(err.message));
    a.recordLine(line('smtp.accepted'));
    a.recordLine(line('delivery.delivered'));
    b.recordLine(line('smtp.accepted'));
    b.recordLine(line('smtp.accepted'));
    b.recordLine(line('delivery.delivered'));
    // Before any write, A sees only its own (pending) counts.
    expect(totalsOf((await sharedA.read()).series)).toEqual({ accepted: 1, delivered: 1, deferred: 0, failed: 0 });
    await sharedB.flush();
    const read = await sharedA.read();
    expect(read.scope).toBe('cluster');
    expect(totalsOf(read.series)).toEqual({ accepted: 3, delivered: 2, deferred: 0, failed: 0 });
    // A's write fails once: its counts stay pending (still shown), are stored by the next write, never twice.
    storeA.failNext = 1;
    await sharedA.flush();
    expect(errors).toEqual(['database unreachable']);
    expect(totalsOf((await sharedA.read()).series)).toEqual({ accepted: 3, delivered: 2, deferred: 0, failed: 0 });
    now += MINUTE_MS;
    a.recordLine(line('delivery.failed'));
    await sharedA.flush();
    await sharedA.flush();
    expect(a.pending?.peek()).toEqual([]);
    const after = await sharedB.read();
    expect(totalsOf(after.series)).toEqual({ accepted: 3, delivered: 2, deferred: 0, failed: 1 });
    expect(after.series.at(-1)?.failed).toBe(1);
    expect(after.series.at(-2)?.accepted).toBe(3);
  });

  it("falls back to this node's own figures when the store cannot be read", async () => {
    const a = new Activity(() => 5 * MINUTE_MS, new PendingCounts());
    a.recordLine(line('smtp.accepted'));
    const broken: ActivityStore = { add: () => Promise.reject(new Error('down')), read: () => Promise.reject(new Error('down')) };
    const read = await new SharedActivity(broken, a as Activity & { pending: PendingCounts }, () => undefined).read();
    expect(read.scope).toBe('node-fallback');
    expect(totalsOf(read.series).accepted).toBe(1);
  });
});
