/**
 * Terminal questions for `hash-password` and `setup --no-browser`. On a terminal, `read` (npm's own
 * prompt module) asks, and secrets are typed without echo; piped input (scripts, tests) is read one
 * line per question from a single line reader, because a reader per question would swallow the
 * lines buffered after its own.
 */
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { read } from 'read';

export interface Prompter {
  /** Asks for a line; an empty answer takes `fallback`. */
  ask(question: string, fallback?: string): Promise<string>;
  /** Asks without echo on a terminal. */
  secret(question: string): Promise<string>;
  close(): void;
}

export class PromptEndedError extends Error {
  constructor() {
    super('standard input ended before every question was answered');
  }
}

export function createPrompter(input: Readable & { isTTY?: boolean }, output: Writable & { isTTY?: boolean }): Prompter {
  if (input.isTTY) {
    const ask = async (question: string, fallback: string | undefined, silent: boolean) => {
      const answer = await read({ input, output, prompt: question, silent, replace: '', ...(fallback !== undefined ? { default: fallback } : {}) });
      return String(answer).trim() || fallback || '';
    };
    return { ask: (q, fallback) => ask(q, fallback, false), secret: (q) => ask(q, undefined, true), close: () => undefined };
  }
  const lines = createInterface({ input, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const next = async (question: string, fallback?: string): Promise<string> => {
    output.write(question);
    const line = await lines.next();
    output.write('\n');
    if (line.done) throw new PromptEndedError();
    return line.value.replace(/\r$/, '').trim() || fallback || '';
  };
  return { ask: next, secret: (q) => next(q), close: () => void lines.return?.() };
}
