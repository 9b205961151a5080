/**
 * The delivery side as the rest of the relay sees it: the single-node Scheduler (file spool, all
 * state in memory) or the cluster's ClaimLoop (shared spool, state in the database). app.ts picks
 * one by spool.backend; queue commands, metrics and intake only know this interface.
 */
import os from 'node:os';
import { ClaimLoop, type ClaimLoopDeps, type ClusterSnapshot } from './claim-loop.js';
import { Scheduler, type SchedulerOptions } from './scheduler.js';
import type { SpoolEntry } from '../spool/entry.js';
import type { MailboxGate } from './draft-cleanup.js';

export interface Dispatcher extends MailboxGate {
  start(): void;
  enqueue(entry: SpoolEntry): void;
  /** False while this node is delivering the message (its outcome is about to be written). */
  forget(id: string): boolean;
  isInFlight(id: string): boolean;
  /** An operator retries this message now; `scheduledAt` is when its next automatic attempt was due. */
  noteManualRetry(id: string, scheduledAt: number): void;
  queuedFor(mailbox: string): number;
  snapshot(): ClusterSnapshot;
  updateOptions(options: SchedulerOptions): void;
  stop(deadlineMs: number): Promise<{ unfinished: number }>;
}

/** This process's name in leases and delivery logs: host and pid tell an operator which relay it was. */
export const nodeName = (): string => `${os.hostname()}:${process.pid}`;

export function createDispatcher(options: SchedulerOptions, deps: ClaimLoopDeps, shared: { leaseMs: number } | null): Dispatcher {
  return shared ? new ClaimLoop({ ...options, leaseMs: shared.leaseMs, node: nodeName() }, deps) : new Scheduler(options, deps);
}
