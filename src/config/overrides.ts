/**
 * Command-line overrides (--listen, --admin-listen) merged into the configuration *before* it is
 * validated, so every rule (the open-relay guard, the admin token rule) judges what will actually
 * be bound, at start and at every reload.
 */

export interface CommandLineOverrides {
  /** --listen HOST:PORT replaces smtp.listen. */
  listen?: string | undefined;
  /** --admin-listen HOST:PORT or "off" (false) replaces admin.listen. */
  adminListen?: string | false | undefined;
}

const isRecord = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

/** A section with one key replaced; a section that is not a map is left for validation to report. */
function withKey(section: unknown, key: string, value: unknown): unknown {
  if (section === undefined || section === null) return { [key]: value };
  return isRecord(section) ? { ...section, [key]: value } : section;
}

export function applyOverrides(raw: unknown, overrides: CommandLineOverrides): unknown {
  if (!isRecord(raw)) return raw;
  const out: Record<string, unknown> = { ...raw };
  if (overrides.listen !== undefined) out.smtp = withKey(raw.smtp, 'listen', [overrides.listen]);
  if (overrides.adminListen !== undefined) out.admin = withKey(raw.admin, 'listen', overrides.adminListen);
  return out;
}

/** " (with --listen 0.0.0.0:2525)" for error messages: the operator sees the flag took part. */
export function describeOverrides(overrides: CommandLineOverrides): string {
  const flags = [
    ...(overrides.listen !== undefined ? [`--listen ${overrides.listen}`] : []),
    ...(overrides.adminListen !== undefined ? [`--admin-listen ${overrides.adminListen === false ? 'off' : overrides.adminListen}`] : []),
  ];
  return flags.length > 0 ? ` (with ${flags.join(' ')})` : '';
}
