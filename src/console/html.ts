/**
 * Server-rendered HTML for the setup page and the console: a tagged template that escapes every
 * interpolated value unless it is already markup, one layout and one stylesheet. No client
 * framework and no build chain: the pages are forms and tables, and they must work from a relay
 * with no Internet access (nothing is loaded from a CDN).
 */
export class Markup {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

function render(value: unknown): string {
  if (value instanceof Markup) return value.text;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(String(value));
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Markup {
  let out = strings[0] ?? '';
  values.forEach((value, i) => (out += render(value) + (strings[i + 1] ?? '')));
  return new Markup(out);
}

export const STYLESHEET = `
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; --ok:#1a7f37; --fail:#cf222e; --warn:#9a6700; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:#fff; }
header.top { background:#24292f; color:#fff; padding:.6rem 1rem; display:flex; flex-wrap:wrap; gap:.4rem 1.2rem; align-items:center; }
header.top strong { font-size:1.05rem; }
header.top nav { display:flex; flex-wrap:wrap; gap:.2rem .9rem; }
header.top a { color:#e6edf3; text-decoration:none; }
header.top a[aria-current] { color:#fff; text-decoration:underline; }
main { max-width:1100px; margin:0 auto; padding:1rem; }
h1 { font-size:1.4rem; margin:.4rem 0 1rem; } h2 { font-size:1.1rem; margin:1.4rem 0 .6rem; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(160px, 1fr)); gap:.7rem; }
.card { border:1px solid var(--line); border-radius:6px; padding:.6rem .8rem; background:var(--bg); }
.card .n { font-size:1.5rem; font-weight:600; } .card .l { color:var(--muted); font-size:.85rem; }
.ok { color:var(--ok); } .fail { color:var(--fail); } .warn { color:var(--warn); } .muted { color:var(--muted); }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:.9rem; }
th, td { text-align:left; padding:.4rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--bg); font-weight:600; }
td.id { font-family: ui-monospace, monospace; white-space:nowrap; }
form.stack label { display:block; font-weight:600; margin:.8rem 0 .2rem; }
form.stack .help { display:block; color:var(--muted); font-size:.85rem; font-weight:400; }
input[type=text], input[type=password], input[type=email], input[type=search], select, textarea { width:100%; max-width:34rem; padding:.45rem .5rem; border:1px solid var(--line); border-radius:6px; font:inherit; }
input[type=file] { max-width:100%; }
button, .button { display:inline-block; padding:.5rem 1rem; border-radius:6px; border:1px solid #1f883d; background:#1f883d; color:#fff; font:inherit; font-weight:600; cursor:pointer; text-decoration:none; }
button.secondary, .button.secondary { background:#fff; color:var(--fg); border-color:var(--line); }
button.danger { background:var(--fail); border-color:var(--fail); }
.actions { display:flex; flex-wrap:wrap; gap:.5rem; margin:.8rem 0; } .actions form { margin:0; }
fieldset { border:1px solid var(--line); border-radius:6px; margin:1rem 0; padding:.4rem 1rem 1rem; max-width:40rem; }
details summary { cursor:pointer; font-weight:600; margin:.8rem 0; }
ol.steps { list-style:none; padding:0; } ol.steps li { padding:.5rem .6rem; border-left:4px solid var(--line); margin:.4rem 0; background:var(--bg); overflow-wrap:anywhere; }
ol.steps li.ok { border-color:var(--ok); color:inherit; } ol.steps li.fail { border-color:var(--fail); color:inherit; } ol.steps li.warn, ol.steps li.note { border-color:var(--warn); color:inherit; }
ol.steps .tag { font-weight:700; text-transform:uppercase; font-size:.8rem; margin-right:.4rem; }
ol.steps .fix { display:block; margin-top:.3rem; }
.user-code { font-family: ui-monospace, monospace; font-size:1.3rem; letter-spacing:.1em; background:#fff; border:1px solid var(--line); border-radius:4px; padding:0 .3rem; }
pre, code { font-family: ui-monospace, monospace; font-size:.85rem; } pre { background:var(--bg); padding:.6rem; overflow-x:auto; border-radius:6px; }
figure.chart-figure { margin:0 0 1rem; }
.chart { width:100%; height:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
.legend { font-size:.85rem; color:var(--muted); } .legend span { margin-right:1rem; }
.filters { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; margin-bottom:.8rem; } .filters input[type=search] { max-width:20rem; }
.notice { padding:.6rem .8rem; border-radius:6px; background:#ddf4ff; border:1px solid #54aeff; margin:.8rem 0; }
.notice.fail { background:#ffebe9; border-color:#ff8182; color:inherit; }
td { overflow-wrap:break-word; }
.filters select { width:auto; }
@media (max-width: 600px) {
  main { padding:.6rem; } th, td { padding:.35rem .3rem; } .hide-narrow { display:none; }
  /* Long tables become one block per row on a phone, each cell labelled by its column. */
  table.rows thead { display:none; }
  table.rows tr { display:block; border-bottom:1px solid var(--line); padding:.3rem 0; }
  table.rows td { display:block; border:0; padding:.1rem .3rem; }
  table.rows td[data-label]::before { content: attr(data-label) ": "; color:var(--muted); }
}
`;

/** The page up to the start of <main>'s content: sent first when a page streams its progress. */
export function pageStart(title: string, nav: Markup = html``): Markup {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} - smtp-graph-relay</title><link rel="stylesheet" href="/assets/style.css"></head>
<body><header class="top"><strong>smtp-graph-relay</strong>${nav}</header><main>`;
}

export const PAGE_END = html`</main></body></html>`;

export function layout(title: string, body: Markup, nav: Markup = html``): Markup {
  return html`${pageStart(title, nav)}${body}${PAGE_END}`;
}

/** Security headers for every page: no framing, no inline script, nothing from elsewhere. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // Not no-referrer: under that policy Chromium sends "Origin: null" with a form post, which the
  // Origin check must refuse; same-origin sends the referrer to ourselves only.
  'referrer-policy': 'same-origin',
};
