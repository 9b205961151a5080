/**
 * Loading: YAML text -> ${VAR} substitution -> schema validation -> frozen config.
 * Every problem is collected and reported at once, each with its path and a hint; secrets are never echoed.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { pathKey, substituteEnv, typedByEnv } from './env-substitution.js';
import { applyOverrides, describeOverrides, type CommandLineOverrides } from './overrides.js';
import { configSchema, SECRET_KEYS, type RelayConfig } from './schema.js';

export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(
    readonly source: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    super(`${source}: ${problems.length} configuration problem(s):\n${problems.map((p) => `  - ${p.path || '(top level)'}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const HINTS: Array<[RegExp, string]> = [
  [/^graph$/, 'add a graph: section with tenantId, clientId, auth and mailbox (see relay.example.yaml)'],
  [/^graph\.(tenantId|clientId)$/, 'copy it from the app registration\'s Overview page in the Entra admin center'],
  [/^graph\.auth\.method$/, 'one of clientSecret, certificate, password, deviceCode, federated'],
  [/^graph\.auth\.clientSecret$/, 'use the secret *value* (not its ID), ideally as "${GRAPH_CLIENT_SECRET}"'],
];

function describeIssue(issue: z.core.$ZodIssue, wholeRefs: ReadonlyMap<string, string>): ConfigProblem[] {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: path ? `${path}.${key}` : key, message: 'unknown key (check spelling and indentation; see relay.example.yaml)' }));
  }
  let message = issue.message;
  // Never echo what was received for a secret key: zod messages can include the input.
  const last = issue.path[issue.path.length - 1];
  // A length rule's message names the rule, never the value, so it stays (it says what to fix).
  if (typeof last === 'string' && SECRET_KEYS.has(last) && issue.code !== 'too_small') message = 'invalid value (not shown: secret)';
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) message = 'required';
  const reference = wholeRefs.get(pathKey(issue.path));
  if (reference) message = `${message} (the value of ${reference})`;
  const hint = HINTS.find(([pattern]) => pattern.test(path))?.[1];
  return [{ path, message: hint ? `${message} - ${hint}` : message }];
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}

/**
 * Validates an already-parsed object: env substitution, then the command-line overrides, then the
 * schema, so its rules see the effective configuration.
 */
export function validateConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env, source = 'config', overrides: CommandLineOverrides = {}): RelayConfig {
  return validateWith(configSchema, raw, env, source, overrides);
}

/** validateConfig's steps against any part of the schema (a whole config, or the sections a command needs). */
function validateWith<S extends z.ZodType>(schema: S, raw: unknown, env: NodeJS.ProcessEnv, source: string, overrides: CommandLineOverrides): z.output<S> {
  const problems: ConfigProblem[] = [];
  const wholeRefs = new Map<string, string>();
  const substituted = applyOverrides(substituteEnv(raw ?? {}, env, [], problems, wholeRefs), overrides);
  let result = schema.safeParse(substituted);
  if (!result.success) {
    // `maxConnections: ${MAX_CONN}`: the environment gave a string where a number or boolean
    // belongs. Convert exactly those values and validate once more.
    const typed = typedByEnv(
      substituted,
      result.error.issues.flatMap((issue): Array<{ path: PropertyKey[]; expected: 'number' | 'boolean' }> => {
        if (issue.code !== 'invalid_type' || !wholeRefs.has(pathKey(issue.path))) return [];
        if (issue.expected === 'number') return [{ path: issue.path, expected: 'number' }];
        return issue.expected === 'boolean' ? [{ path: issue.path, expected: 'boolean' }] : [];
      }),
    );
    if (typed !== null) result = schema.safeParse(typed);
  }
  if (!result.success) problems.push(...result.error.issues.flatMap((issue) => describeIssue(issue, wholeRefs)));
  if (problems.length > 0 || !result.success) throw new ConfigError(`${source}${describeOverrides(overrides)}`, problems);
  return deepFreeze(result.data);
}

/** YAML text to plain data, with the alias limit; syntax errors name their line. */
function parseYaml(text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: `YAML syntax: ${e.message.split('\n')[0] ?? e.code}` })),
    );
  }
  let raw: unknown;
  try {
    // Aliases are expanded here; more than 100 alias expansions (the yaml default, stated so it
    // stays) is a "billion laughs" document, refused before it can use the memory it asks for.
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(source, [{ path: '', message: `YAML could not be read: ${(err as Error).message}; a relay config needs no more than a few aliases (&name / *name) - write the values out instead` }]);
  }
  return raw;
}

export function parseConfigText(text: string, env: NodeJS.ProcessEnv = process.env, source = 'config', overrides: CommandLineOverrides = {}): RelayConfig {
  return validateConfig(parseYaml(text, source), env, source, overrides);
}

async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConfigError(file, [{ path: '', message: `cannot read the file (${code}); check the path given to --config or RELAY_CONFIG` }]);
  }
}

export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env, overrides: CommandLineOverrides = {}): Promise<RelayConfig> {
  return parseConfigText(await readConfigText(file), env, file, overrides);
}

/**
 * Only the named top-level sections of a config file, substituted and validated: a command needs
 * only what it uses (`queue` from an admin shell has no GRAPH_CLIENT_SECRET, issue 12, item 8).
 * Other sections are not looked at, so their variables need not be set.
 */
export async function loadConfigSections<K extends keyof RelayConfig>(file: string, sections: readonly K[], env: NodeJS.ProcessEnv = process.env): Promise<Pick<RelayConfig, K>> {
  const raw = (parseYaml(await readConfigText(file), file) ?? {}) as Record<string, unknown>;
  const picked = Object.fromEntries(sections.map((section) => [section, raw[section] ?? {}]));
  // The same steps as a whole file (env substitution, typed ${VAR}), on a schema of these sections only.
  const shape = Object.fromEntries(sections.map((section) => [section, configSchema.shape[section]]));
  return validateWith(z.strictObject(shape), picked, env, file, {}) as unknown as Pick<RelayConfig, K>;
}

/** A copy of the config with every secret value replaced, for --print-config and diagnostics. */
export function redactConfig(value: unknown, key = ''): unknown {
  if (SECRET_KEYS.has(key) && typeof value === 'string') return '[redacted]';
  // proxy and spool.postgres.url may carry a password in the URL.
  if ((key === 'proxy' || key === 'url') && typeof value === 'string') return redactUrlCredentials(value);
  if (Array.isArray(value)) return value.map((item) => redactConfig(item));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k)]));
  }
  return value;
}

/** "http://user:pass@proxy:3128" -> "http://user:[redacted]@proxy:3128". */
export function redactUrlCredentials(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) url.password = 'redacted';
    return url.toString().replace(':redacted@', ':[redacted]@');
  } catch {
    return value;
  }
}
