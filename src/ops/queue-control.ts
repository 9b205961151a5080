/**
 * Operator queue commands (mailq, postqueue -f, postsuper): list, show, retry, hold, release,
 * delete, purge. With a running relay they go through its scheduler (via the admin API) so memory
 * and disk agree; with the relay stopped they edit the spool directly, which is then safe.
 */
import type { Dispatcher } from '../delivery/dispatcher.js';
import type { SpoolEntry } from '../spool/entry.js';
import { SpoolBusyError, type Spool } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { parseDurationMs } from '../config/units.js';

export type QueueState = 'active' | 'queued' | 'deferred' | 'held' | 'failed';
const QUEUE_STATES = new Set<QueueState>(['active', 'queued', 'deferred', 'held', 'failed']);

export interface QueueItem {
  id: string;
  state: QueueState;
  entry: SpoolEntry;
}

export class QueueCommandError extends Error {
  constructor(
    message: string,
    readonly status: 404 | 409 | 400,
  ) {
    super(message);
  }
}

export function stateOf(entry: SpoolEntry, where: 'queue' | 'failed', inFlight: boolean): QueueState {
  if (where === 'failed') return 'failed';
  if (inFlight) return 'active';
  if (entry.held) return 'held';
  return entry.attempts > 0 ? 'deferred' : 'queued';
}

export class QueueControl {
  constructor(
    private readonly spool: Spool,
    private readonly scheduler: Dispatcher | null,
    private readonly clock: Clock,
    /** The draft clean-up queue: a deleted message's half-built draft is deleted too (draft-cleanup.ts). */
    private readonly drafts: { discard(queueId: string): Promise<void> } | null = null,
  ) {}

  private inFlight(id: string): boolean {
    return this.scheduler?.isInFlight(id) ?? false;
  }

  async list(filter?: QueueState): Promise<QueueItem[]> {
    const items: QueueItem[] = [];
    for (const where of ['queue', 'failed'] as const) {
      for (const entry of await this.spool.list(where)) {
        const state = stateOf(entry, where, this.inFlight(entry.id));
        if (!filter || filter === state) items.push({ id: entry.id, state, entry });
      }
    }
    return items;
  }

  async show(id: string): Promise<QueueItem> {
    const queued = await this.spool.get(id, 'queue');
    if (queued) return { id, state: stateOf(queued, 'queue', this.inFlight(id)), entry: queued };
    const failed = await this.spool.get(id, 'failed');
    if (failed) return { id, state: 'failed', entry: failed };
    throw new QueueCommandError(`no message ${id} in the queue or in failed/`, 404);
  }

  private claim(id: string): void {
    if (this.scheduler && !this.scheduler.forget(id)) throw new QueueCommandError(`message ${id} is being delivered right now; try again in a moment`, 409);
  }

  /** Retry now: a waiting message is tried at once; a failed one goes back into the queue. */
  async retry(id: string): Promise<QueueItem> {
    const item = await this.show(id);
    const now = this.clock.now();
    if (item.state === 'failed') {
      const { failedAt: _f, failReason: _r, ...rest } = item.entry;
      const entry: SpoolEntry = { ...rest, held: false, nextAttemptAt: now, requeuedAt: now };
      await this.spool.requeueFailed(entry);
      this.scheduler?.enqueue(entry);
      return { id, state: 'queued', entry };
    }
    if (item.state === 'active') return item;
    this.claim(id);
    const entry: SpoolEntry = { ...item.entry, nextAttemptAt: now };
    await this.spool.update(entry);
    if (item.entry.attempts > 0) this.scheduler?.noteManualRetry(id, item.entry.nextAttemptAt);
    this.scheduler?.enqueue(entry);
    return { id, state: stateOf(entry, 'queue', false), entry };
  }

  /** postqueue -f: every waiting message (not held, not failed) is tried now. */
  async retryAll(): Promise<number> {
    let count = 0;
    for (const item of await this.list()) {
      if (item.state === 'queued' || item.state === 'deferred') {
        await this.retry(item.id);
        count += 1;
      }
    }
    return count;
  }

  async hold(id: string): Promise<QueueItem> {
    const item = await this.show(id);
    if (item.state === 'failed') throw new QueueCommandError(`message ${id} has failed; retry or delete it instead`, 400);
    this.claim(id);
    const entry: SpoolEntry = { ...item.entry, held: true };
    await this.spool.update(entry);
    this.scheduler?.enqueue(entry);
    return { id, state: 'held', entry };
  }

  async release(id: string): Promise<QueueItem> {
    const item = await this.show(id);
    if (item.state !== 'held') throw new QueueCommandError(`message ${id} is not on hold (${item.state})`, 400);
    this.claim(id);
    const entry: SpoolEntry = { ...item.entry, held: false, nextAttemptAt: this.clock.now() };
    await this.spool.update(entry);
    this.scheduler?.enqueue(entry);
    return { id, state: stateOf(entry, 'queue', false), entry };
  }

  async delete(id: string): Promise<void> {
    const item = await this.show(id);
    if (item.state === 'failed') return this.spool.deleteFailed(id);
    this.claim(id);
    await this.spool.remove(id);
    await this.drafts?.discard(id);
  }

  /** Deletes failed messages that failed more than olderThanMs ago; returns how many. */
  async purgeFailed(olderThanMs: number): Promise<number> {
    const cutoff = this.clock.now() - olderThanMs;
    let count = 0;
    for (const entry of await this.spool.list('failed')) {
      if ((entry.failedAt ?? 0) < cutoff) {
        await this.spool.deleteFailed(entry.id);
        count += 1;
      }
    }
    return count;
  }
}

export interface QueueResponse {
  status: number;
  body: unknown;
}

/**
 * A queue command as the admin API names it (method, /queue/... path and query), run against
 * `control`: the one dispatch behind both the admin API and `queue` commands on a stopped relay.
 */
export async function runQueueRequest(control: QueueControl, method: string, url: URL): Promise<QueueResponse> {
  const parts = url.pathname.split('/').filter(Boolean);
  const ok = (body: unknown): QueueResponse => ({ status: 200, body });
  const badRequest = (error: string): QueueResponse => ({ status: 400, body: { error } });
  try {
    if (method === 'GET' && parts.length === 1) {
      const state = url.searchParams.get('state') as QueueState | null;
      if (state && !QUEUE_STATES.has(state)) return badRequest(`state must be one of ${[...QUEUE_STATES].join(', ')}`);
      return ok(await control.list(state ?? undefined));
    }
    if (method === 'POST' && parts[1] === 'retry-all') return ok({ retried: await control.retryAll() });
    if (method === 'POST' && parts[1] === 'purge-failed') {
      const olderThan = parseDurationMs(url.searchParams.get('olderThan') ?? '');
      if (olderThan === null) return badRequest('olderThan must be a duration such as 7d');
      return ok({ purged: await control.purgeFailed(olderThan) });
    }
    const id = parts[1] ?? '';
    if (method === 'GET' && parts.length === 2) return ok(await control.show(id));
    if (method === 'POST' && parts.length === 3) {
      const action = parts[2];
      if (action === 'retry') return ok(await control.retry(id));
      if (action === 'hold') return ok(await control.hold(id));
      if (action === 'release') return ok(await control.release(id));
      if (action === 'delete') {
        await control.delete(id);
        return ok({ deleted: id });
      }
    }
    return { status: 404, body: { error: 'not found' } };
  } catch (err) {
    if (err instanceof QueueCommandError) return { status: err.status, body: { error: err.message } };
    // Another relay of the cluster holds the message's lease: its outcome comes first.
    if (err instanceof SpoolBusyError) return { status: 409, body: { error: err.message } };
    throw err;
  }
}
