/** The setup page: the form (inputs named by dotted config key) and Save and Test's live results. */
import { html, type Markup } from '../console/html.js';
import type { CheckStep } from '../ops/check.js';
import { AUTH_METHODS, FIELDS, METHOD_LABELS, SECRETS_TO_ENV, SEND_TO, type AuthMethod, type FieldSpec } from './fields.js';
import type { SetupEvent } from './save-and-test.js';

function input(field: FieldSpec, values: Readonly<Record<string, string>>, kept: ReadonlySet<string> = new Set()): Markup {
  // Each method's fields carry its class; the stylesheet shows only the chosen method's (:has()).
  return html`<div class="field${field.methods ? html` by-method ${field.methods.map((m) => `m-${m}`).join(' ')}` : ''}">${control(field, values, kept)}</div>`;
}

function control(field: FieldSpec, values: Readonly<Record<string, string>>, kept: ReadonlySet<string>): Markup {
  const id = `f-${field.key.replace(/\./g, '-')}`;
  const value = values[field.key] ?? '';
  const shownFor = field.methods ? html` <span class="muted">(${field.methods.map((m) => METHOD_LABELS[m as AuthMethod].split(' (')[0]).join(', ')})</span>` : '';
  const label = html`<label for="${id}">${field.label}${shownFor}${field.help ? html`<span class="help">${field.help}</span>` : ''}</label>`;
  switch (field.kind) {
    case 'select':
      return html`${label}<select id="${id}" name="${field.key}">${(field.options ?? []).map(
        (o) => html`<option value="${o}"${o === value ? html` selected` : ''}>${field.key === 'graph.auth.method' ? METHOD_LABELS[o as AuthMethod] : o}</option>`,
      )}</select>`;
    case 'secret':
      // Write-only: a secret is never sent back to the browser, not even the one just typed.
      return html`${label}<input id="${id}" type="password" name="${field.key}" autocomplete="new-password" value="">`;
    case 'file':
      return html`${label}<input id="${id}" type="file" name="${field.key}" accept=".pem,.crt,.cer,.key">${
        kept.has(field.key) ? html`<span class="help" data-kept="${field.key}">The file chosen in the previous attempt is kept; choose one only to replace it.</span>` : ''
      }`;
    default:
      return html`${label}<input id="${id}" type="text" name="${field.key}" value="${value}" placeholder="${field.placeholder ?? ''}" autocomplete="off" spellcheck="false">`;
  }
}

/** `kept`: file fields whose upload from a failed attempt is kept by the server (a browser never refills a file input). */
export function setupForm(values: Readonly<Record<string, string>>, csrf: string, configFile: string, editing: boolean, kept: ReadonlySet<string> = new Set()): Markup {
  const byGroup = (advanced: boolean, auth: boolean) => FIELDS.filter((f) => (f.advanced === true) === advanced && f.key.startsWith('graph.auth.') === auth);
  const main = FIELDS.filter((f) => !f.advanced && !f.key.startsWith('graph.auth.') && !f.key.startsWith('smtp.') && f.key !== 'spool.dir');
  const smtp = FIELDS.filter((f) => f.key.startsWith('smtp.') || f.key === 'spool.dir');
  return html`<form class="stack" method="post" action="/save" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="${csrf}">
<p class="muted">${editing ? 'Editing' : 'Creating'} <code>${configFile}</code>. Nothing is written until the test passes.</p>
<fieldset><legend>Microsoft 365 tenant</legend>
${byGroup(false, true).filter((f) => f.key === 'graph.auth.method').map((f) => input(f, values))}
${main.map((f) => input(f, values))}
</fieldset>
<fieldset><legend>Credentials for the chosen method</legend>
<p class="help muted hide-with-has">Fill in the fields for the method chosen above; the others are ignored.</p>
${byGroup(false, true).filter((f) => f.key !== 'graph.auth.method').map((f) => input(f, values, kept))}
<label><input type="checkbox" name="${SECRETS_TO_ENV}"${values[SECRETS_TO_ENV] ? html` checked` : ''}> Keep secrets in a separate file (<code>secrets.env</code>, mode 0600) referenced as <code>\${VAR}</code></label>
</fieldset>
<fieldset><legend>Who may send</legend>${smtp.map((f) => input(f, values))}</fieldset>
<details><summary>Advanced</summary><fieldset>${byGroup(true, false).map((f) => input(f, values))}</fieldset></details>
<fieldset><legend>Test</legend>
<label for="f-sendto">Send a test message to<span class="help">Optional: proves sending end to end.</span></label>
<input id="f-sendto" type="text" name="${SEND_TO}" value="${values[SEND_TO] ?? ''}" placeholder="you@contoso.com" autocomplete="off">
</fieldset>
<div class="actions"><button type="submit">Save and Test</button></div>
</form>`;
}

/** Without script: browsers with :has() (all current ones) hide the fields of the other methods. */
export const METHOD_CSS = AUTH_METHODS.map((m) => `form:has(option[value=${m}]:checked) .by-method:not(.m-${m}) { display:none; }`).join('\n') + '\nform:has(option:checked) .hide-with-has { display:none; }\n';

const TAGS: Record<CheckStep['status'], string> = { ok: 'ok', fail: 'failed', warn: 'warning', note: 'note' };

/** One line of live progress: a stage's result, the sign-in instructions, problems or the saved file. */
export function eventItem(event: SetupEvent): Markup {
  switch (event.kind) {
    case 'step':
      return html`<li class="${event.step.status}" data-stage="${event.step.stage}"><span class="tag ${event.step.status}">${TAGS[event.step.status]}</span>${event.step.message}${
        event.step.fix ? html`<span class="fix"><strong>Fix:</strong> ${event.step.fix}</span>` : ''
      }</li>\n`;
    case 'signin':
      return html`<li class="note" data-stage="signin"><span class="tag warn">sign in</span>${linkify(event.message)}<span class="fix muted">This page continues by itself once you have signed in.</span></li>\n`;
    case 'problems':
      return html`<li class="fail" data-stage="config"><span class="tag fail">not valid</span>Please correct:<ul>${event.problems.map((p) => html`<li>${p}</li>`)}</ul></li>\n`;
    case 'saved':
      return html`</ol><div class="notice" id="saved"><strong>Saved.</strong> Wrote <code>${event.configFile}</code> (mode 0600)${
        event.envFile ? html` and <code>${event.envFile}</code> (mode 0600)` : ''
      }${event.files.map((f) => html`, <code>${f}</code>`)}.</div><h2>Next step</h2><ul>${event.next.map((line) => html`<li><code>${line}</code></li>`)}</ul><ol class="steps">`;
  }
}

/** The device-code message names its sign-in URL; make it a link (opened in a new tab). */
function linkify(message: string): Markup {
  const match = /https:\/\/\S+?(?=[\s,.;)]*(\s|$))/.exec(message);
  if (!match) return html`${message}`;
  const url = match[0];
  const [before, after] = [message.slice(0, match.index), message.slice(match.index + url.length)];
  // The code the person types is shown large: it is read off this page into another one.
  const code = /^(.*?\bcode )([A-Z0-9-]{4,})(.*)$/s.exec(after);
  const rest = code ? html`${code[1]}<strong class="user-code">${code[2]}</strong>${code[3]}` : html`${after}`;
  return html`${before}<a href="${url}" target="_blank" rel="noopener noreferrer">${url}</a>${rest}`;
}
