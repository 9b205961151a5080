/**
 * Loading: YAML text -> ${VAR} substitution -> schema validation -> frozen config.
 * Every problem is collected and reported at once, each with its path and a hint; secrets are never echoed.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
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

const ENV_REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Replaces ${VAR} in every string value; "$$" stands for a literal "$". Missing variables become problems. */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = [], problems: ConfigProblem[] = []): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REFERENCE, (whole, name: string | undefined) => {
      if (name === undefined) return '$';
      const replacement = env[name];
      if (replacement === undefined) {
        problems.push({ path: path.join('.'), message: `environment variable ${name} is not set (referenced as \${${name}}); export it or put it in the service's EnvironmentFile` });
        return whole;
      }
      return replacement;
    });
  }
  if (Array.isArray(value)) return value.map((item, i) => substituteEnv(item, env, [...path, String(i)], problems));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = substituteEnv(item, env, [...path, key], problems);
    return out;
  }
  return value;
}

const HINTS: Array<[RegExp, string]> = [
  [/^graph$/, 'add a graph: section with tenantId, clientId, auth and mailbox (see relay.example.yaml)'],
  [/^graph\.(tenantId|clientId)$/, 'copy it from the app registration\'s Overview page in the Entra admin center'],
  [/^graph\.auth\.method$/, 'one of clientSecret, certificate, password, deviceCode, federated'],
  [/^graph\.auth\.clientSecret$/, 'use the secret *value* (not its ID), ideally as "${GRAPH_CLIENT_SECRET}"'],
];

function describeIssue(issue: z.core.$ZodIssue): ConfigProblem[] {
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

/** Validates an already-parsed object (after env substitution). */
export function validateConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env, source = 'config'): RelayConfig {
  const problems: ConfigProblem[] = [];
  const substituted = substituteEnv(raw ?? {}, env, [], problems);
  const result = configSchema.safeParse(substituted);
  if (!result.success) problems.push(...result.error.issues.flatMap(describeIssue));
  if (problems.length > 0 || !result.success) throw new ConfigError(source, problems);
  return deepFreeze(result.data);
}

export function parseConfigText(text: string, env: NodeJS.ProcessEnv = process.env, source = 'config'): RelayConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: `YAML syntax: ${e.message.split('\n')[0] ?? e.code}` })),
    );
  }
  return validateConfig(doc.toJS(), env, source);
}

export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<RelayConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConfigError(file, [{ path: '', message: `cannot read the file (${code}); check the path given to --config or RELAY_CONFIG` }]);
  }
  return parseConfigText(text, env, file);
}

/** A copy of the config with every secret value replaced, for --print-config and diagnostics. */
export function redactConfig(value: unknown, key = ''): unknown {
  if (SECRET_KEYS.has(key) && typeof value === 'string') return '[redacted]';
  if (key === 'proxy' && typeof value === 'string') return redactUrlCredentials(value);
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
