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

  /** Events of this address within the window. */
  count(address: string): number {
    return this.recent(address).length;
  }
}

/**
 * At most maxFailures wrong passwords per window and client address are ever evaluated, however
 * many connections send them at once. A guess in flight counts against the limit until scrypt has
 * answered (40 parallel guesses were all evaluated with maxFailures 5 when only finished failures
 * counted); one that would exceed it waits for those in flight instead of being refused, so
 * parallel logins with the right password are not turned away, and gets 454 once the failures
 * that came back fill the window.
 */
export class LoginAttemptGate {
  private readonly inFlight = new Map<string, number>();
  private readonly waiting = new Map<string, Array<() => void>>();

  constructor(
    private readonly failures: SlidingWindowLimiter,
    private readonly maxFailures: number,
  ) {}

  /** Null: over the limit (454). Otherwise call the result once with the verification's outcome. */
  async begin(address: string): Promise<((failed: boolean) => void) | null> {
    for (;;) {
      const failed = this.failures.count(address);
      if (failed >= this.maxFailures) return null;
      const busy = this.inFlight.get(address) ?? 0;
      if (failed + busy < this.maxFailures) {
        this.inFlight.set(address, busy + 1);
        return (outcomeFailed) => this.finish(address, outcomeFailed);
      }
      await new Promise<void>((resolve) => {
        const queue = this.waiting.get(address);
        if (queue) queue.push(resolve);
        else this.waiting.set(address, [resolve]);
      });
    }
  }

  private finish(address: string, failed: boolean): void {
    if (failed) this.failures.record(address);
    const busy = (this.inFlight.get(address) ?? 1) - 1;
    if (busy > 0) this.inFlight.set(address, busy);
    else this.inFlight.delete(address);
    const waiters = this.waiting.get(address) ?? [];
    this.waiting.delete(address);
    for (const wake of waiters) wake();
  }
}
