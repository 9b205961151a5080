/**
 * 10,000 random and malformed SMTP sessions against a relay that requires AUTH: garbage bytes,
 * huge lines, pipelining abuse, early talkers, command soup, authenticated clients that vanish in
 * the middle of DATA. Afterwards the process still serves, no file descriptor leaked, and nothing
 * reached the spool (policy refuses every one of them). Seeded, so a failure can be replayed: session
 * i is drawn from its own generator seeded with FUZZ_SEED + i, and a failure prints the seed.
 */
import { readdirSync } from 'node:fs';
import net from 'node:net';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { hashPassword } from '../../src/smtp/local-auth.js';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { spoolFiles } from '../helpers/spool-traces.js';

const SESSIONS = 10_000;
const CONCURRENCY = 64;
/** FUZZ_SEED=<n> replays a run: session i draws only from its own generator, seeded with seed + i. */
const SEED = Number(process.env.FUZZ_SEED ?? 20261126);

type Random = () => number;
/** mulberry32: small, fast, reproducible. */
function generator(start: number): Random {
  let state = start | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const bytes = (random: Random, n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(random() * 256)));
const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

const COMMANDS = ['EHLO x', 'HELO y', 'MAIL FROM:<a@contoso.example>', 'MAIL FROM:<>', 'RCPT TO:<b@contoso.example>', 'DATA', 'RSET', 'NOOP', 'VRFY root', 'QUIT', 'STARTTLS', 'AUTH PLAIN', 'AUTH LOGIN', 'AUTH CRAM-MD5', 'BDAT 10 LAST', 'XCLIENT ADDR=1.2.3.4', 'MAIL FROM:<a@b> SIZE=99999999999999999999', 'RCPT TO:<' + 'x'.repeat(600) + '@y>', 'MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8', '\u0000\u0001\u0002', 'GET / HTTP/1.1'];

function payloadFor(random: Random, kind: number): Buffer[] {
  switch (kind) {
    case 0: // garbage bytes
      return [bytes(random, 1 + Math.floor(random() * 2048))];
    case 1: // a huge line without CRLF
      return [Buffer.from('MAIL FROM:<'), Buffer.alloc(64 * 1024 + Math.floor(random() * 64 * 1024), 0x61)];
    case 2: {
      // pipelining abuse: many whole transactions in one write, without AUTH
      const tx = 'MAIL FROM:<a@contoso.example>\r\nRCPT TO:<b@contoso.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n';
      return [Buffer.from(`EHLO fuzz\r\n${tx.repeat(1 + Math.floor(random() * 30))}QUIT\r\n`)];
    }
    case 3: // command soup, sometimes with binary arguments
      return Array.from({ length: 1 + Math.floor(random() * 12) }, () => Buffer.concat([Buffer.from(pick(random, COMMANDS)), random() < 0.2 ? bytes(random, 20) : Buffer.alloc(0), Buffer.from(random() < 0.9 ? '\r\n' : '\n')]));
    case 4: // authenticated, then gone in the middle of DATA
      return [Buffer.from(`EHLO fuzz\r\nAUTH PLAIN ${plain('device', 'device-pass')}\r\nMAIL FROM:<d@contoso.example>\r\nRCPT TO:<e@contoso.example>\r\nDATA\r\nSubject: cut\r\n\r\n${'partial '.repeat(Math.floor(random() * 500))}`)];
    default: // wrong credentials, then an unauthenticated transaction
      return [Buffer.from(`EHLO fuzz\r\nAUTH PLAIN ${plain('device', `guess-${Math.floor(random() * 1e6)}`)}\r\nMAIL FROM:<a@contoso.example>\r\nRCPT TO:<b@contoso.example>\r\nDATA\r\nx\r\n.\r\n`)];
  }
}

/** Session `index`: every choice (bytes, kind, timing) comes from seed + index alone, whatever the arrival order. */
function session(port: number, index: number): Promise<void> {
  const random = generator(SEED + index);
  return new Promise((resolve) => {
    // AUTH sessions are rarer: each costs a deliberate scrypt verification (~40 ms of CPU).
    const roll = random();
    const kind = roll < 0.04 ? 4 : roll < 0.08 ? 5 : Math.floor(random() * 4);
    const chunks = payloadFor(random, kind);
    const earlyTalker = random() < 0.2;
    // The linger below is drawn now, not when the reply arrives, so the draws never depend on timing.
    const linger = random() < 0.5 ? 0 : Math.floor(random() * 30);
    const socket = net.connect(port, '127.0.0.1');
    const finish = () => {
      socket.destroy();
      resolve();
    };
    socket.setTimeout(1500, finish);
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('data', () => undefined);
    const send = () => {
      for (const chunk of chunks) socket.write(chunk);
      // Half the sessions vanish right away, the rest linger briefly for the answers.
      setTimeout(finish, linger);
    };
    if (earlyTalker) socket.once('connect', send);
    else socket.once('data', send);
  });
}

let h: Harness;
beforeAll(async () => {
  const users = [{ username: 'device', passwordHash: await hashPassword('device-pass') }];
  h = await startHarness({ config: { smtp: { socketTimeout: '2s', auth: { required: true, users, maxFailures: 1_000_000 } } } });
});
afterAll(async () => {
  await h.close();
});

const openFds = () => readdirSync('/proc/self/fd').length;

describe('fuzzing the SMTP edge', () => {
  it(`survives ${SESSIONS} random and malformed sessions with nothing spooled and no descriptor leaked (FUZZ_SEED=${SEED})`, async () => {
    onTestFailed(() => console.error(`fuzz: failed with FUZZ_SEED=${SEED}; replay with FUZZ_SEED=${SEED} npx vitest run test/integration/smtp-fuzz.test.ts`));
    await new Promise((r) => setTimeout(r, 200));
    const fdsBefore = openFds();
    const started = Date.now();
    let next = 0;
    // Its own deadline, inside the test's 240 s: a stall fails as "n of 10,000 ran", not as a
    // timeout. Not a speed check: a busy CI machine (2 cores, other test files) took 64 s.
    const stopAt = started + 200_000;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < SESSIONS && Date.now() < stopAt) await session(h.port, next++);
      }),
    );
    const elapsed = Date.now() - started;
    expect(next, `only ${next} of ${SESSIONS} sessions ran within 200 s`).toBe(SESSIONS);
    // Let the server notice every closed socket (socketTimeout is 2 s).
    const deadline = Date.now() + 5000;
    while (openFds() > fdsBefore + 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(openFds()).toBeLessThanOrEqual(fdsBefore + 5);
    expect(h.logs.records.filter((r) => r.event === 'smtp.accepted')).toEqual([]);
    // Nothing of any refused session in any area (tmp/, journal/, queue/, failed/, corrupt/): the
    // journal holds small messages without touching tmp/, so tmp/ alone cannot tell.
    expect(await spoolFiles(h.spoolDir)).toEqual({ tmp: [], journal: [], queue: [], failed: [], corrupt: [] });
    console.info(`fuzz: ${SESSIONS} sessions in ${elapsed} ms`);

    // Still serving: an authenticated client gets its message through.
    await nodemailer
      .createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true, auth: { user: 'device', pass: 'device-pass' } })
      .sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: 'after fuzz', text: 'x', headers: { 'X-Test-Id': 'after-fuzz' } });
    await waitForDelivery(h.emulator, 'after-fuzz');
  }, 240_000);
});
