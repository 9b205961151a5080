/**
 * admin-guard.ts's Host and Origin rules for pages (the console and the setup page), whose forms
 * post urlencoded or multipart bodies. admin-guard asks state-changing API calls for
 * `application/json` because a cross-site form cannot send it; a page's own forms cannot either,
 * so here that rule is replaced by a per-session CSRF token (session.ts) and a SameSite=Strict
 * cookie, and `admin.token` is asked once on a login form instead of on every request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { checkAdminRequest, isStateChanging, type AdminRefusal } from '../ops/admin-guard.js';
import { escapeHtml } from './html.js';

export function checkPageRequest(req: IncomingMessage, listenHost: string): AdminRefusal | null {
  const method = req.method ?? 'GET';
  return checkAdminRequest(
    {
      method,
      path: new URL(req.url ?? '/', 'http://page').pathname,
      // The content-type rule is admin-guard's CSRF defence for JSON APIs; pages use CSRF tokens.
      headers: isStateChanging(method) ? { ...req.headers, 'content-type': 'application/json' } : req.headers,
      localAddress: req.socket.localAddress,
    },
    { listenHost },
  );
}

/** Answers a refused page request in words a person reads; true when it was refused. */
export function refusePage(req: IncomingMessage, res: ServerResponse, listenHost: string, onRefused?: (refusal: AdminRefusal) => void): boolean {
  const refusal = checkPageRequest(req, listenHost);
  if (!refusal) return false;
  onRefused?.(refusal);
  const text = `<!doctype html><title>Refused</title><p>${escapeHtml(refusal.error)}</p>`;
  res.writeHead(refusal.status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
  return true;
}
