/**
 * `setup --no-browser`: the page's questions in the terminal (secrets without echo), answered in
 * order, then the same Save and Test. A failed test offers to change the answers and try again,
 * with the previous answers as defaults.
 */
import { readFile } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { createPrompter, PromptEndedError } from '../cli/prompt.js';
import { readExisting } from './config-file.js';
import { AUTH_METHODS, FIELDS, METHOD_LABELS, prefill, SECRETS_TO_ENV, SEND_TO, type AuthMethod } from './fields.js';
import { saveAndTest, type SetupEvent } from './save-and-test.js';

export function printEvent(out: Writable, event: SetupEvent): void {
  if (event.kind === 'step') {
    out.write(`${event.step.status === 'fail' ? 'FAIL' : event.step.status.padEnd(4)}  ${event.step.message}\n`);
    if (event.step.fix) out.write(`      fix: ${event.step.fix}\n`);
  } else if (event.kind === 'signin') out.write(`\n${event.message}\n(waiting for the sign-in...)\n\n`);
  else if (event.kind === 'problems') out.write(`FAIL  the answers do not make a valid configuration:\n${event.problems.map((p) => `      - ${p}`).join('\n')}\n`);
  else {
    out.write(`\nSaved ${event.configFile} (mode 0600)${event.envFile ? ` and ${event.envFile} (mode 0600)` : ''}.\n\nNext step:\n${event.next.map((l) => `  ${l}`).join('\n')}\n`);
  }
}

export async function runTerminalSetup(configFile: string, input: Readable & { isTTY?: boolean }, out: Writable & { isTTY?: boolean }, runningAsRoot: boolean): Promise<number> {
  const prompter = createPrompter(input, out);
  try {
    const existing = await readExisting(configFile);
    const answers: Record<string, string> = prefill(existing.data, configFile, runningAsRoot);
    const secrets: Record<string, string> = {};
    out.write(`Connect the relay to Microsoft 365. Answers are written to ${configFile} only when the test passes.\n`);
    for (;;) {
      out.write(`\nAuthorisation methods: ${AUTH_METHODS.map((m, i) => `${i + 1}) ${METHOD_LABELS[m]}`).join('  ')}\n`);
      const choice = await prompter.ask(`Method [${answers['graph.auth.method']}]: `, answers['graph.auth.method']);
      const method = (AUTH_METHODS[Number(choice) - 1] ?? choice) as AuthMethod;
      answers['graph.auth.method'] = method;
      const files: Record<string, Buffer> = {};
      for (const field of FIELDS) {
        if (field.key === 'graph.auth.method' || (field.methods && !field.methods.includes(method))) continue;
        const label = `${field.label}${field.advanced ? ' (advanced, Enter keeps it)' : ''}`;
        if (field.kind === 'secret') {
          const typed = await prompter.secret(`${label}${secrets[field.key] || field.key === 'graph.auth.privateKeyPassphrase' ? ' (Enter keeps it / none)' : ''}: `);
          if (typed) secrets[field.key] = typed;
        } else if (field.kind === 'file') {
          const file = await prompter.ask(`${label}: path to the PEM file [${answers[field.key] ?? ''}]: `, answers[field.key]);
          answers[field.key] = file;
          if (file) files[field.key] = await readFile(file);
        } else {
          answers[field.key] = await prompter.ask(`${label} [${answers[field.key] ?? ''}]: `, answers[field.key]);
        }
      }
      answers[SECRETS_TO_ENV] = (await prompter.ask(`Keep secrets in a separate secrets.env (0600)? [${answers[SECRETS_TO_ENV] === 'yes' ? 'Y/n' : 'y/N'}]: `, answers[SECRETS_TO_ENV] ?? 'no')).toLowerCase().startsWith('y') ? 'yes' : 'no';
      answers[SEND_TO] = await prompter.ask(`Send a test message to (optional) [${answers[SEND_TO] ?? ''}]: `, answers[SEND_TO]);
      out.write('\nSave and Test:\n');
      const ok = await saveAndTest({ configFile, submission: { values: { ...answers, ...secrets }, files } }, (event) => printEvent(out, event));
      if (ok) return 0;
      const again = await prompter.ask('\nNothing was saved. Change the answers and test again? [Y/n]: ', 'y');
      if (!again.toLowerCase().startsWith('y')) return 1;
    }
  } catch (err) {
    if (err instanceof PromptEndedError) {
      out.write(`\n${err.message}; nothing was saved\n`);
      return 1;
    }
    throw err;
  } finally {
    prompter.close();
  }
}
