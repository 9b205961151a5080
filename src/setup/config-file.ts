/**
 * Writing what setup decided: the configuration file (mode 0600, because it can hold a secret),
 * edited in place through the yaml package's Document API so the comments a person wrote stay,
 * uploaded certificate files, and the optional env file for secrets (0600, KEY=value lines, the
 * format systemd's EnvironmentFile and `docker run --env-file` both read).
 */
import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { parseDocument, type Document } from 'yaml';
import type { Edit } from './fields.js';

const HEADER = ` smtp-graph-relay configuration, written by "smtp-graph-relay setup".
 Every key is described in relay.example.yaml and config.schema.json.`;

export async function readExisting(file: string): Promise<{ doc: Document | null; data: unknown }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { doc: null, data: {} };
    throw err;
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`${file} is not valid YAML (${doc.errors[0]?.message ?? 'parse error'}); fix or move it, then run setup again`);
  return { doc, data: doc.toJS() ?? {} };
}

/** The new file's text: the existing document with the edits applied (comments kept), or a new one. */
export function renderConfig(existing: Document | null, edits: readonly Edit[]): string {
  const doc = existing ?? parseDocument('{}');
  if (!existing) doc.commentBefore = HEADER;
  for (const [keys, value] of edits) {
    if (value === undefined) {
      if (doc.hasIn(keys)) doc.deleteIn(keys);
    } else doc.setIn(keys, value);
  }
  // A document started as "{}" is a flow map; a person reads block style.
  const contents = doc.contents as { flow?: boolean } | null;
  if (contents && 'flow' in contents) contents.flow = false;
  return doc.toString();
}

/** Writes through a temporary file and a rename, so a crash never leaves half a configuration. */
export async function writePrivate(file: string, content: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, content, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

function quoteEnv(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./~-]*$/.test(value) ? value : `"${value.replace(/["\\$`]/g, (c) => `\\${c}`)}"`;
}

/** The env file with these variables set (other lines kept). */
export async function renderEnvFile(file: string, vars: Readonly<Record<string, string>>): Promise<string> {
  const existing = await readFile(file, 'utf8').catch(() => '');
  const lines = existing.split('\n').filter((line) => line !== '' && !Object.keys(vars).some((name) => line.startsWith(`${name}=`)));
  for (const [name, value] of Object.entries(vars)) lines.push(`${name}=${quoteEnv(value)}`);
  return `${lines.join('\n')}\n`;
}

/** KEY=value lines back to variables (for testing the configuration before the service has them). */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (!match) continue;
    const raw = match[2] as string;
    out[match[1] as string] = raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
  }
  return out;
}
