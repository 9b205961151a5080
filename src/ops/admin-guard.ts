/**
 * The request guard for everything served on the admin listener (the admin API, and any page or
 * route added there later). A web page the operator happens to open must not be able to drive it:
 *
 * - DNS rebinding: a page on attacker.example re-points its name at 127.0.0.1 and then talks to
 *   the listener as "same origin". Its requests still carry `Host: attacker.example`, so the Host
 *   must name this listener (a loopback name or address, the host of admin.listen, or the address
 *   the connection actually arrived on), else 421 Misdirected Request.
 * - Cross-site requests: a form or `fetch(..., {mode: 'no-cors'})` can POST with
 *   `Content-Type: text/plain` without a CORS preflight, but never with `application/json`
 *   (Fetch standard, "CORS-safelisted request-header"). State-changing requests therefore need
 *   `Content-Type: application/json` (415 otherwise) and are refused (403) when `Origin` or
 *   `Sec-Fetch-Site` says they come from another origin.
 * - `admin.token`: when set, every endpoint except /healthz needs `Authorization: Bearer <token>`
 *   (401 otherwise), compared in constant time.
 *
 * `checkAdminRequest` is the pure decision; `guardAdminRequest` applies it to a Node request and
 * writes the refusal. Call the latter first in any handler on the admin listener.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { isLoopback, normalizeAddress } from '../net/address-policy.js';

export interface AdminGuardPolicy {
  /** The host part of admin.listen (e.g. "127.0.0.1", "0.0.0.0", "relay01.corp"). */
  listenHost: string;
  /** admin.token; undefined when none is configured (allowed on loopback only, see config). */
  token?: string | undefined;
}

/** What the guard looks at: plain data, so the decision is testable without sockets. */
export interface AdminRequestFacts {
  method: string;
  /** The path without the query string. */
  path: string;
  headers: IncomingHttpHeaders;
  /** The local address the connection arrived on (req.socket.localAddress). */
  localAddress?: string | undefined;
}

export interface AdminRefusal {
  status: 400 | 401 | 403 | 415 | 421;
  /** Says what was wrong and what to send instead; never echoes a token. */
  error: string;
  /** Short machine-readable reason for logs and metrics. */
  reason: 'host' | 'token' | 'origin' | 'content-type';
  headers?: Record<string, string>;
}

/** The only path served without the token: a liveness probe that reveals nothing. */
export const ADMIN_PUBLIC_PATHS: ReadonlySet<string> = new Set(['/healthz']);

/** GET and HEAD read; anything else (POST, PUT, DELETE, PATCH, OPTIONS...) is treated as changing state. */
export function isStateChanging(method: string): boolean {
  const m = method.toUpperCase();
  return m !== 'GET' && m !== 'HEAD';
}

const HOST_CHARS = /^[A-Za-z0-9.\-:[\]]+$/;

/**
 * "Host: [::1]:9925" -> { hostname: "::1", host: "[::1]:9925" }; null when malformed. The WHATWG
 * URL parser canonicalises the name (case, IPv4 forms such as 2130706433, IPv6 zero runs), the
 * same way a browser does before it sends the header.
 */
export function parseHostHeader(value: string | undefined): { hostname: string; host: string } | null {
  if (!value || !HOST_CHARS.test(value)) return null;
  try {
    const url = new URL(`http://${value}`);
    const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
    return hostname ? { hostname, host: url.host } : null;
  } catch {
    return null;
  }
}

function canonicalHost(host: string): string | null {
  return parseHostHeader(net.isIPv6(host) ? `[${host}]` : host)?.hostname ?? null;
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

/** True when the Host header names this listener. */
export function hostNamesListener(hostname: string, policy: AdminGuardPolicy, localAddress?: string): boolean {
  if (hostname === 'localhost') return true;
  if (net.isIP(hostname) !== 0 && isLoopback(hostname)) return true;
  if (!WILDCARD_HOSTS.has(policy.listenHost) && canonicalHost(policy.listenHost) === hostname) return true;
  // A wildcard listener (0.0.0.0, ::) is reached by the address of an interface: that address,
  // as an IP literal, names it (a rebinding page can only send a DNS name, never our address).
  if (localAddress && net.isIP(hostname) !== 0) {
    const local = canonicalHost(normalizeAddress(localAddress));
    if (local !== null && local === canonicalHost(normalizeAddress(hostname))) return true;
  }
  return false;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Constant-time comparison of a presented token with the configured one (hashing first hides the length). */
export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The pure decision: null when the request may proceed, else the refusal to send. */
export function checkAdminRequest(facts: AdminRequestFacts, policy: AdminGuardPolicy): AdminRefusal | null {
  const host = parseHostHeader(header(facts.headers, 'host'));
  if (!host || !hostNamesListener(host.hostname, policy, facts.localAddress)) {
    return {
      status: 421,
      reason: 'host',
      error: 'the Host header does not name this admin listener (DNS rebinding protection): use http://127.0.0.1:PORT, http://localhost:PORT or the host of admin.listen',
    };
  }
  if (policy.token !== undefined && !ADMIN_PUBLIC_PATHS.has(facts.path)) {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header(facts.headers, 'authorization') ?? '');
    if (!match || !tokenMatches(match[1] as string, policy.token)) {
      return {
        status: 401,
        reason: 'token',
        error: 'admin.token is set: send "Authorization: Bearer <token>" with the value of admin.token',
        headers: { 'www-authenticate': 'Bearer realm="smtp-graph-relay admin"' },
      };
    }
  }
  if (isStateChanging(facts.method)) {
    const origin = header(facts.headers, 'origin');
    const fetchSite = header(facts.headers, 'sec-fetch-site');
    if ((origin !== undefined && !sameOrigin(origin, host.host)) || (fetchSite !== undefined && fetchSite !== 'same-origin' && fetchSite !== 'none')) {
      return { status: 403, reason: 'origin', error: 'cross-origin request refused: the admin API changes state only for requests from its own origin' };
    }
    const mediaType = (header(facts.headers, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase();
    if (mediaType !== 'application/json') {
      return { status: 415, reason: 'content-type', error: 'state-changing admin requests need "Content-Type: application/json"' };
    }
  }
  return null;
}

/** Origin "http://127.0.0.1:9925" against Host "127.0.0.1:9925"; "null" and other schemes never match. */
function sameOrigin(origin: string, host: string): boolean {
  try {
    const url = new URL(origin);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.host === host && url.origin !== 'null';
  } catch {
    return false;
  }
}

/**
 * Applies the guard to a Node request: returns true when the handler may go on; otherwise it has
 * already answered with the refusal (JSON body `{ error }`) and calls onRefused for logging.
 */
export function guardAdminRequest(req: IncomingMessage, res: ServerResponse, policy: AdminGuardPolicy, onRefused?: (refusal: AdminRefusal) => void): boolean {
  const refusal = checkAdminRequest(
    { method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://admin').pathname, headers: req.headers, localAddress: req.socket.localAddress },
    policy,
  );
  if (refusal === null) return true;
  onRefused?.(refusal);
  const text = JSON.stringify({ error: refusal.error });
  res.writeHead(refusal.status, {
    ...refusal.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
  return false;
}
