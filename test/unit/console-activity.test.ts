/** The console's in-memory record: per-minute counts over a day, depth samples, recent events. */
import { describe, expect, it } from 'vitest';
import { Activity, DAY_MINUTES, EVENT_CAPACITY, MINUTE_MS } from '../../src/console/activity.js';
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
