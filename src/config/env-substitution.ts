/**
 * ${VAR} references in configuration values. A value that is exactly one reference may stand for a
 * number or a boolean (`maxConnections: ${MAX_CONN}`): the environment only has strings, so where
 * the schema wants a number or boolean there, the string is converted (typedByEnv). Anything else
 * that starts like a reference but is not one (`${ VAR }`, `${}`, an unclosed `${`) is an error
 * naming it, never text passed on silently.
 */

export interface EnvProblem {
  path: string;
  message: string;
}

/** "$$" (a literal "$"), "${...}" or an unclosed "${". */
const REFERENCE = /\$\$|\$\{([^}]*)\}|\$\{/g;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const WHOLE_REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;

function substituteString(value: string, env: NodeJS.ProcessEnv, where: string, problems: EnvProblem[]): string {
  return value.replace(REFERENCE, (whole: string, inner: string | undefined) => {
    if (whole === '$$') return '$';
    if (inner === undefined) {
      problems.push({ path: where, message: 'unclosed "${" - write ${VAR} for an environment variable or $$ for a literal "$"' });
      return whole;
    }
    if (!NAME.test(inner)) {
      const fix = NAME.test(inner.trim()) ? `write \${${inner.trim()}} (no spaces inside the braces)` : 'a name is letters, digits and _ and does not start with a digit';
      problems.push({ path: where, message: `"${whole}" is not a valid environment reference: ${fix}; $$ stands for a literal "$"` });
      return whole;
    }
    const replacement = env[inner];
    if (replacement === undefined) {
      problems.push({ path: where, message: `environment variable ${inner} is not set (referenced as \${${inner}}); export it or put it in the service's EnvironmentFile` });
      return whole;
    }
    return replacement;
  });
}

/**
 * Replaces ${VAR} in every string value; "$$" stands for a literal "$". Problems (a missing
 * variable, a malformed reference) are collected; `wholeRefs` receives the paths of values that
 * were exactly one reference, for typedByEnv.
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = [], problems: EnvProblem[] = [], wholeRefs: Map<string, string> = new Map()): unknown {
  if (typeof value === 'string') {
    const replaced = substituteString(value, env, path.join('.'), problems);
    if (WHOLE_REFERENCE.test(value) && replaced !== value) wholeRefs.set(pathKey(path), value);
    return replaced;
  }
  if (Array.isArray(value)) return value.map((item, i) => substituteEnv(item, env, [...path, String(i)], problems, wholeRefs));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = substituteEnv(item, env, [...path, key], problems, wholeRefs);
    return out;
  }
  return value;
}

export function pathKey(path: ReadonlyArray<PropertyKey>): string {
  return JSON.stringify(path.map(String));
}

/** The string as the YAML 1.2 core schema would have read it, when it is a number or a boolean. */
function scalarOf(text: string, expected: 'number' | 'boolean'): number | boolean | undefined {
  const t = text.trim();
  if (expected === 'boolean') return /^(true|True|TRUE)$/.test(t) ? true : /^(false|False|FALSE)$/.test(t) ? false : undefined;
  return /^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(t) ? Number(t) : undefined;
}

/**
 * A copy of `tree` where each value at `paths` (from a whole ${VAR} reference, where the schema
 * expected a number or boolean) is converted; null when none converts (nothing to retry).
 */
export function typedByEnv(tree: unknown, paths: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; expected: 'number' | 'boolean' }>): unknown {
  let changed = false;
  const copy = structuredClone(tree) as Record<string, unknown>;
  for (const { path, expected } of paths) {
    const parent = path.slice(0, -1).reduce<unknown>((node, key) => (node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[String(key)] : undefined), copy);
    const key = String(path[path.length - 1]);
    if (parent === null || typeof parent !== 'object') continue;
    const current = (parent as Record<string, unknown>)[key];
    const typed = typeof current === 'string' ? scalarOf(current, expected) : undefined;
    if (typed === undefined) continue;
    (parent as Record<string, unknown>)[key] = typed;
    changed = true;
  }
  return changed ? copy : null;
}
