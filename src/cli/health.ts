/**
 * `smtp-graph-relay health --config FILE`: the container HEALTHCHECK. It asks the admin listener the
 * configuration names (admin.listen), so the check follows the configuration instead of a port
 * baked into the image. A wildcard listen address is asked on loopback.
 */
import type { Writable } from 'node:stream';
import { httpBaseUrl, parseHostPort } from '../config/units.js';

/** Demo mode and the schema default (config/schema.ts admin.listen). */
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:9925';

export function healthUrl(adminListen: string, ready: boolean): string {
  const parsed = parseHostPort(adminListen);
  if (!parsed) throw new Error(`admin.listen "${adminListen}" is not host:port`);
  const host = parsed.host === '0.0.0.0' || parsed.host === '' ? '127.0.0.1' : parsed.host === '::' ? '::1' : parsed.host;
  return `${httpBaseUrl(host, parsed.port)}${ready ? '/readyz' : '/healthz'}`;
}

/** `token` is admin.token from the same config: /readyz needs it when it is set (admin-guard.ts); /healthz never does. */
export async function runHealth(adminListen: string | false, ready: boolean, out: Writable, timeoutMs = 4000, token?: string): Promise<number> {
  if (adminListen === false) {
    out.write('admin.listen is off, so there is nothing to ask; turn it on (e.g. 127.0.0.1:9925) for health checks\n');
    return 1;
  }
  const url = healthUrl(adminListen, ready);
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
    const body = await res.text();
    out.write(`${res.ok ? 'ok' : 'not ok'}  ${url} ${res.status} ${body.slice(0, 500)}\n`);
    return res.ok ? 0 : 1;
  } catch (err) {
    out.write(`not ok  ${url}: ${(err as Error).message} (is the relay running, with admin.listen as configured?)\n`);
    return 1;
  }
}
