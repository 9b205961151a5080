/**
 * What a SIGTERM or SIGINT means when one has already arrived.
 *
 * A second one normally says "stop now, do not wait for the drain". But one stop can arrive twice
 * within milliseconds: a process-group kill (`kill -- -PGID`, `timeout`, a container runtime or a
 * supervisor signalling every process) reaches the relay directly *and* through a wrapper that
 * forwards it (`npm start` -> scripts/start.mjs; npm itself forwards SIGTERM to its child). A
 * newcomer who stopped the demo that way saw "second SIGTERM: exiting now" and lost the graceful
 * drain. A repeat within REPEATED_STOP_WINDOW_MS is taken as that same stop; one later is a person
 * (or a supervisor's escalation) asking again, and forces the exit.
 */
export const REPEATED_STOP_WINDOW_MS = 1000;

export type StopSignalAction = 'stop' | 'same-stop' | 'force';

/** `firstAt`: when the first stop signal arrived (null: none yet); `now` from the caller's clock. */
export function stopSignalAction(firstAt: number | null, now: number): StopSignalAction {
  if (firstAt === null) return 'stop';
  return now - firstAt < REPEATED_STOP_WINDOW_MS ? 'same-stop' : 'force';
}
