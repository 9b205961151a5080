/**
 * Human-friendly units used in the YAML config: durations ("90s", "5d") and sizes ("35MB").
 * Pure parsing, no config knowledge.
 */

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Parses "250ms", "90s", "15m", "1h", "5d" or a bare number of seconds; returns milliseconds or null. */
export function parseDurationMs(value: number | string): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : null;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(value);
  if (!match) return null;
  const amount = Number(match[1]);
  const unit = (match[2] ?? 's').toLowerCase();
  const factor = DURATION_UNITS_MS[unit];
  return factor === undefined ? null : Math.round(amount * factor);
}

// KB/MB/GB are decimal (as Exchange documents "35 MB"); KiB/MiB/GiB are binary.
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/** Parses "35MB", "3MiB", "512KB" or a bare number of bytes; returns bytes or null. */
export function parseSizeBytes(value: number | string): number | null {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : null;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$/i.exec(value);
  if (!match) return null;
  const factor = SIZE_UNITS[(match[2] ?? 'b').toLowerCase()];
  return factor === undefined ? null : Math.floor(Number(match[1]) * factor);
}

/** Splits "host:port" / "[v6]:port" into parts; null when malformed. */
export function parseHostPort(value: string): { host: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value.trim());
  if (!match) return null;
  const port = Number(match[3]);
  if (port < 0 || port > 65535) return null;
  return { host: (match[1] ?? match[2]) as string, port };
}

/** The http:// base URL of a listener (IPv6 hosts in brackets). */
export function httpBaseUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * The address a client on this machine uses to reach a listener bound to `host`: a wildcard
 * (0.0.0.0, ::) is reached through loopback, where the admin guard accepts the Host header.
 */
export function localClientHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}
