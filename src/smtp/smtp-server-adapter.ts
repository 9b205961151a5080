/**
 * The places where smtp-server's behaviour is adjusted, kept together so an upgrade is checked in
 * one file (test/integration/smtp-protocol.test.ts and smtp-edge-guarantees.test.ts assert them over
 * a real socket):
 *
 * 1. Enhanced status codes. smtp-server derives the RFC 3463 code from the reply number alone for
 *    errors returned by our hooks (550 -> 5.1.1, 452 -> 4.2.2), which is wrong for policy and limit
 *    replies. Our SmtpReply messages carry their own code, so for those the derived one is suppressed.
 * 2. The connection limit reply: smtp-server answers "421 <name> Too many connected clients" with
 *    no enhanced code; it gets 4.7.0 here, as RFC 3463 has it for policy-based refusals.
 * 3. A whole-session deadline (slowloris): smtp-server only has an idle timeout, so a client that
 *    sends a byte every minute could hold a session for ever. After maxSessionMs it gets 421 4.4.2.
 * 4. One report per refusal. Every 4xx/5xx reply goes through send(), whoever decided it: our hooks,
 *    or smtp-server itself (530 before AUTH, 552 for a declared SIZE=, 501 syntax, 421 limits),
 *    which answers those without calling any hook. onRefusalSent sees each one exactly once.
 * 5. The greeting delay. smtp-server waits a fixed 100 ms before every greeting to catch early
 *    talkers; that caps a one-message-per-connection sender at ~10 msg/s per connection (measured
 *    77 msg/s with 8 clients, field-lessons.md). Trusted clients (loopback or allowlisted) skip it;
 *    everyone else keeps the protection.
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const ENHANCED_CODE_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

interface ConnectionInternals {
  remoteAddress: string;
  session: object;
  _server: {
    options: { maxClients?: number; skipGreetingDelay?: (address: string) => boolean; maxSessionMs?: () => number; onRefusalSent?: RefusalListener };
    connections: Set<unknown>;
  };
  _socket: { once(event: 'close', listener: () => void): void };
  close(): void;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  send(code: number, data?: unknown, context?: unknown): void;
  name: string;
}

/** Told about every 4xx/5xx reply a connection sends (the session object is stable per connection). */
export type RefusalListener = (session: object, remoteAddress: string, code: number, text: string) => void;

let applied = false;

export function applySmtpServerAdjustments(): void {
  if (applied) return;
  applied = true;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals & { init(): void };

  const originalSend = proto.send;
  proto.send = function send(this: ConnectionInternals, code: number, data?: unknown, context?: unknown) {
    if (code === 421 && typeof data === 'string' && data.endsWith('Too many connected clients, try again in a moment')) data = `4.7.0 ${data}`;
    const keepOwnCode = typeof data === 'string' && ENHANCED_CODE_PREFIX.test(data);
    if (code >= 400) this._server.options.onRefusalSent?.(this.session, this.remoteAddress, code, typeof data === 'string' ? data : String(data ?? ''));
    return originalSend.call(this, code, data, keepOwnCode ? false : context);
  };

  const originalInit = proto.init;
  proto.init = function init(this: ConnectionInternals) {
    const maxSessionMs = this._server.options.maxSessionMs?.() ?? 0;
    if (maxSessionMs > 0) {
      const timer = setTimeout(() => {
        this.send(421, '4.4.2 Session exceeded its maximum duration, closing');
        this.close();
      }, maxSessionMs);
      timer.unref();
      this._socket.once('close', () => clearTimeout(timer));
    }
    const skip = this._server.options.skipGreetingDelay;
    if (!skip || !skip(this.remoteAddress)) {
      originalInit.call(this);
      return;
    }
    // Same steps as smtp-server's init(), minus the 100 ms timer.
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      this.connectionReady();
    });
  };
}
