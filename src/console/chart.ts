/**
 * Line charts drawn on the server as inline SVG: a day of per-minute values is 1,440 points per
 * line, which a polyline draws without any chart library or script (and so without a CDN).
 */
import { html, type Markup } from './html.js';

export interface ChartLine {
  label: string;
  color: string;
  /** One value per minute, oldest first; null where nothing was sampled. */
  values: Array<number | null>;
}

const W = 720;
const H = 160;
const PAD = { left: 36, right: 8, top: 10, bottom: 22 };

/** A rounded-up axis maximum (1, 2, 5 x 10^n) so the scale reads easily. */
export function niceMax(value: number): number {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function lineChart(title: string, lines: readonly ChartLine[], testId: string): Markup {
  const count = Math.max(1, ...lines.map((l) => l.values.length));
  const max = niceMax(Math.max(0, ...lines.flatMap((l) => l.values.filter((v): v is number => v !== null))));
  const x = (i: number) => PAD.left + (i / Math.max(1, count - 1)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const paths = lines.map((line) => {
    // A gap where nothing was sampled, rather than a line drawn through zero.
    let d = '';
    let pen = false;
    line.values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      // A lone sample (no neighbour to join) still shows: a short stroke back to the left.
      if (!pen && (line.values[i + 1] ?? null) === null) d += 'h-2';
      pen = true;
    });
    const total = line.values.reduce<number>((sum, v) => sum + (v ?? 0), 0);
    return html`<path d="${d}" fill="none" stroke="${line.color}" stroke-width="1.5" data-series="${line.label}" data-total="${total}"/>`;
  });
  const hours = [24, 18, 12, 6, 0];
  return html`<figure class="chart-figure">
<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${title}" data-testid="${testId}" data-max="${max}">
<line x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}" stroke="#d0d7de"/>
<line x1="${PAD.left}" y1="${PAD.top}" x2="${W - PAD.right}" y2="${PAD.top}" stroke="#eaeef2" stroke-dasharray="3 3"/>
<text x="${PAD.left - 4}" y="${PAD.top + 4}" font-size="10" text-anchor="end" fill="#57606a">${max}</text>
<text x="${PAD.left - 4}" y="${H - PAD.bottom}" font-size="10" text-anchor="end" fill="#57606a">0</text>
${hours.map((h) => html`<text x="${x(((24 - h) / 24) * (count - 1)).toFixed(1)}" y="${H - 6}" font-size="10" text-anchor="middle" fill="#57606a">${h === 0 ? 'now' : `-${h}h`}</text>`)}
${paths}
</svg>
<figcaption class="legend"><strong>${title}</strong> ${lines.map((l) => html`<span><svg width="14" height="4" aria-hidden="true"><rect width="14" height="4" fill="${l.color}"/></svg> ${l.label}</span>`)}</figcaption>
</figure>`;
}
