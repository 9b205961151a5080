/**
 * Local SMTP AUTH users: scrypt password hashes (`smtp-graph-relay hash-password`), constant-time
 * comparison, and a limiter that counts failed logins per client address only. While a client is
 * over the limit every attempt gets 454 4.7.0 (temporary), so a correct password is never answered
 * with a permanent 535 (a peer did exactly that, field-lessons.md).
 */
import { randomBytes, scrypt as scryptCallback, timingSafeEqual } from 'node:crypto';

// scrypt cost N=2^14, r=8, p=1: the parameters RFC 7914 §2 calls interactive-login strength.
const N = 16384;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;

function scrypt(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCallback(password, salt, KEY_LENGTH, { N: n, r, p, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))));
}

/** "$scrypt$N=16384,r=8,p=1$<salt b64>$<hash b64>" */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, N, R, P);
  return `$scrypt$N=${N},r=${R},p=${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const match = /^\$scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(encoded);
  if (!match) return false;
  const expected = Buffer.from(match[5] as string, 'base64');
  const actual = await scrypt(password, Buffer.from(match[4] as string, 'base64'), Number(match[1]), Number(match[2]), Number(match[3]));
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * Events per client address in a sliding window: failed logins (successes are not counted) and,
 * with smtp.rateLimit, messages per minute.
 */
export class SlidingWindowLimiter {
  /** Event times per client address, oldest first. */
  private readonly events = new Map<string, number[]>();

  constructor(
    private readonly maxEvents: number,
    private readonly windowMs: number,
    private readonly now: () => number,
  ) {}

  private recent(address: string): number[] {
    const cutoff = this.now() - this.windowMs;
    const list = (this.events.get(address) ?? []).filter((t) => t > cutoff);
    if (list.length === 0) this.events.delete(address);
    else this.events.set(address, list);
    return list;
  }

  isBlocked(address: string): boolean {
    return this.recent(address).length >= this.maxEvents;
  }

  record(address: string): void {
    const list = this.recent(address);
    list.push(this.now());
    this.events.set(address, list);
  }
}
