/**
 * Pure intake decisions, separated from smtp-server's callbacks so each is tested as a table.
 */
import net from 'node:net';

/** The sending mailbox for a message; routes (issue 4) will extend this. null: nobody may send it. */
export function chooseMailbox(defaultMailbox: string | undefined): string | null {
  return defaultMailbox ?? null;
}

export function isLoopback(address: string): boolean {
  const plain = address.replace(/^::ffff:/i, '');
  if (net.isIPv4(plain)) return plain.startsWith('127.');
  return plain === '::1';
}

/** Whether a client may skip smtp-server's 100 ms early-talker delay (see smtp-server-adapter.ts). */
export function isTrustedClient(address: string): boolean {
  return isLoopback(address);
}

/** A listen address is loopback-only when its host is 127.0.0.0/8, ::1 or "localhost". */
export function isLoopbackListen(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
}
