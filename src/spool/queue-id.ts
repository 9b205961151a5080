import { randomBytes } from 'node:crypto';

/**
 * Queue ids: time-ordered and unique per message (never per SMTP session: a peer that named spool
 * files by session id lost 384 of 400 messages sent over reused connections, field-lessons.md).
 * 9 base36 chars of milliseconds + 10 hex chars of randomness, upper case, safe as a file name.
 */
export function newQueueId(nowMs: number = Date.now()): string {
  return (nowMs.toString(36).padStart(9, '0') + randomHex10()).toUpperCase();
}

// Random bytes are taken from a pool refilled 4 KiB at a time: one randomBytes call per message
// was ~2 % of the intake thread's time under load (node --cpu-prof, bench/README.md).
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let poolAt = 0;

function randomHex10(): string {
  if (poolAt + 5 > pool.length) {
    pool = randomBytes(POOL_BYTES);
    poolAt = 0;
  }
  poolAt += 5;
  return pool.toString('hex', poolAt - 5, poolAt);
}

const QUEUE_ID = /^[0-9A-Z]{19}$/;

export function isQueueId(value: string): boolean {
  return QUEUE_ID.test(value);
}
