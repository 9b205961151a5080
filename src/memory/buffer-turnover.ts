/**
 * Keeps a large message inside the 200 MB RSS budget (issue 13) by asking V8 for a collection
 * after every TURNOVER_BYTES of message bytes moved through the relay.
 *
 * Why: every byte of a large message passes through short-lived Buffers (socket reads, the SMTP
 * dot-unstuffing stream, node-postgres' Bind message, file reads). Buffers live outside V8's heap,
 * and V8 collects them only once their total has grown by its external-memory soft limit (64 MB):
 * a 60 MB message measured 185-217 MB peak RSS with dead buffers piling up to 60-67 MB between
 * collections (5 ms memoryUsage() timeline of large-messages.test.ts). A full collection of the
 * relay's ~30 MB heap takes ~5-15 ms; one per 24 MB moved is a handful per large message, and
 * intake counts only bytes past a message's first MB, so the usual alert (a few KB) never adds.
 *
 * The collector is reached through --expose-gc set at run time (v8.setFlagsFromString, then the
 * `gc` of a fresh context); where that is refused, the relay runs as before.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

const TURNOVER_BYTES = 24 * 1024 * 1024;
/** Intake counts a message's bytes past this much only: bursts of small alerts never collect. */
export const LARGE_MESSAGE_BYTES = 1024 * 1024;

let collect: (() => void) | null | undefined;
let moved = 0;

function collector(): (() => void) | null {
  if (collect !== undefined) return collect;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    collect = typeof gc === 'function' ? () => (gc as () => void)() : null;
  } catch {
    collect = null;
  }
  return collect;
}

/** Counts message bytes that went through fresh Buffers; collects once enough of them are dead. */
export function noteBytesMoved(bytes: number): void {
  moved += bytes;
  if (moved < TURNOVER_BYTES) return;
  moved = 0;
  collector()?.();
}
