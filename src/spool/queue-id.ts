import { randomBytes } from 'node:crypto';

/**
 * Queue ids: time-ordered and unique per message (never per SMTP session: a peer that named spool
 * files by session id lost 384 of 400 messages sent over reused connections, field-lessons.md).
 * 9 base36 chars of milliseconds + 10 hex chars of randomness, upper case, safe as a file name.
 */
export function newQueueId(nowMs: number = Date.now()): string {
  return (nowMs.toString(36).padStart(9, '0') + randomBytes(5).toString('hex')).toUpperCase();
}

const QUEUE_ID = /^[0-9A-Z]{19}$/;

export function isQueueId(value: string): boolean {
  return QUEUE_ID.test(value);
}
