/**
 * Which listeners are reachable from the network, and what a reachable listener must have. Pure
 * functions over listen addresses and policy, used by the schema (the file plus command-line
 * overrides, at start) and by a reload (the listeners actually bound, which a reload cannot move).
 */
import { isLoopbackHost } from '../net/address-policy.js';
import { parseHostPort } from './units.js';

/** The listen addresses that are not loopback-only (0.0.0.0, ::, a LAN address or a host name). */
export function exposedListeners(listeners: readonly string[]): string[] {
  return listeners.filter((l) => !isLoopbackHost(parseHostPort(l)?.host ?? ''));
}

/** Every SMTP listener: STARTTLS/plain ones and the implicit-TLS (SMTPS) ones. */
export function smtpListeners(smtp: { listen: readonly string[]; tls?: { implicitListen?: readonly string[] | undefined } | undefined }): string[] {
  return [...smtp.listen, ...(smtp.tls?.implicitListen ?? [])];
}

/**
 * Why these listeners would make an open relay under this policy, or null. A relay reachable from
 * the network must restrict who may use it: anyone who can reach the port could otherwise send
 * mail as the organisation.
 */
export function openRelayProblem(listeners: readonly string[], policy: { allowedClients?: readonly string[] | undefined; auth: { required: boolean } }): string | null {
  const exposed = exposedListeners(listeners);
  if (exposed.length === 0 || policy.allowedClients || policy.auth.required) return null;
  return `listening on ${exposed.join(', ')} (not loopback) without smtp.allowedClients or smtp.auth.required would make this an open relay: anyone who can reach the port could send mail as your organisation. Fix: set smtp.allowedClients to the senders' networks (e.g. ["10.0.0.0/8"]) and/or smtp.auth.required: true with smtp.auth.users`;
}

/** Why this admin listener must not start, or null: off and loopback are fine; anything else needs a token. */
export function adminExposureProblem(admin: { listen: string | false; token?: string | undefined }): string | null {
  if (admin.listen === false || admin.token !== undefined || exposedListeners([admin.listen]).length === 0) return null;
  return `admin.listen ${admin.listen} is not loopback and admin.token is not set: anyone who can reach it could read, hold and purge the queue. Fix: set admin.token: "\${ADMIN_TOKEN}" (generate one with \`openssl rand -hex 32\`; clients send it as "Authorization: Bearer <token>"), or listen on 127.0.0.1`;
}
