/**
 * `smtp-graph-relay hash-password`: on a terminal it asks twice without echo (a typo would lock the
 * device out); from a pipe it reads the whole of standard input (scripts), never an argument, which
 * would show in `ps` and shell history.
 */
import type { Readable, Writable } from 'node:stream';
import { hashPassword } from '../smtp/local-auth.js';
import { createPrompter } from './prompt.js';

export async function runHashPassword(input: Readable & { isTTY?: boolean }, out: Writable, err: Writable & { isTTY?: boolean }): Promise<number> {
  let password: string;
  if (input.isTTY) {
    const prompter = createPrompter(input, err);
    try {
      password = await prompter.secret('Password: ');
      const again = await prompter.secret('Again:    ');
      if (password !== again) {
        err.write('the two passwords differ; nothing was printed. Run hash-password again.\n');
        return 1;
      }
    } finally {
      prompter.close();
    }
  } else {
    const chunks: Buffer[] = [];
    for await (const chunk of input) chunks.push(chunk as Buffer);
    password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  if (password.length === 0) {
    err.write('hash-password needs a password: type it when asked, or pipe it in, e.g.: printf %s "$PASSWORD" | smtp-graph-relay hash-password\n');
    return 64;
  }
  out.write(`${await hashPassword(password)}\n`);
  return 0;
}
