/**
 * `smtp-graph-relay queue ...`: talks to the running relay's admin API when it answers, so the
 * scheduler and the spool stay in agreement; when nothing listens there (relay stopped) it works on
 * the spool files directly, which is safe then (the spool.dir lock proves no relay holds them).
 */
import type { Writable } from 'node:stream';
import { request } from 'undici';
import type { RelayConfig } from '../config/schema.js';
import { httpBaseUrl, localClientHost, parseDurationMs, parseHostPort } from '../config/units.js';
import { FsSpool } from '../spool/fs/fs-spool.js';
import { SpoolLockedError } from '../spool/lock/spool-lock.js';
import { systemClock } from '../util/clock.js';
import { QueueControl, runQueueRequest, type QueueItem, type QueueState } from './queue-control.js';

export interface QueueCliArgs {
  action: string | undefined;
  id: string | undefined;
  all: boolean;
  state: QueueState | undefined;
  olderThan: string | undefined;
  json: boolean;
}

type Call = { method: 'GET' | 'POST'; path: string };

function callFor(args: QueueCliArgs): Call | string {
  const id = args.id ? encodeURIComponent(args.id) : '';
  switch (args.action) {
    case 'list':
      return { method: 'GET', path: `/queue${args.state ? `?state=${args.state}` : ''}` };
    case 'show':
      return id ? { method: 'GET', path: `/queue/${id}` } : 'queue show needs a queue id';
    case 'retry':
      if (args.all) return { method: 'POST', path: '/queue/retry-all' };
      return id ? { method: 'POST', path: `/queue/${id}/retry` } : 'queue retry needs a queue id or --all';
    case 'hold':
    case 'release':
    case 'delete':
      return id ? { method: 'POST', path: `/queue/${id}/${args.action}` } : `queue ${args.action} needs a queue id`;
    case 'purge':
      if (args.state !== 'failed' || !args.olderThan || parseDurationMs(args.olderThan) === null) return 'queue purge needs --failed and --older-than DURATION (e.g. 7d)';
      return { method: 'POST', path: `/queue/purge-failed?olderThan=${encodeURIComponent(args.olderThan)}` };
    default:
      return 'queue commands: list [--failed|--deferred|--held], show ID, retry ID|--all, hold ID, release ID, delete ID, purge --failed --older-than 7d';
  }
}

const age = (ms: number) => (ms < 90_000 ? `${Math.round(ms / 1000)}s` : ms < 5_400_000 ? `${Math.round(ms / 60_000)}m` : ms < 172_800_000 ? `${Math.round(ms / 3_600_000)}h` : `${Math.round(ms / 86_400_000)}d`);

function describeItem(item: QueueItem, now: number): string {
  const e = item.entry;
  const lines = [
    `${item.id}  ${item.state}  ${e.size} bytes  received ${new Date(e.receivedAt).toISOString()} (${age(now - e.receivedAt)} ago)`,
    `  from <${e.envelope.mailFrom}>  to ${e.envelope.rcptTo.map((r) => `<${r}>`).join(', ')}`,
    `  mailbox ${e.mailbox}  message-id ${e.messageId ?? '-'}  attempts ${e.attempts}`,
  ];
  if (item.state !== 'failed' && item.state !== 'held' && e.attempts > 0) lines.push(`  next attempt ${new Date(e.nextAttemptAt).toISOString()} (in ${age(Math.max(0, e.nextAttemptAt - now))})`);
  if (e.lastError) lines.push(`  last error (${e.lastError.kind}): ${e.lastError.message}${e.lastError.requestId ? `  request-id ${e.lastError.requestId}` : ''}`);
  if (e.failReason) lines.push(`  failed ${e.failedAt ? new Date(e.failedAt).toISOString() : ''}: ${e.failReason}`);
  return lines.join('\n');
}

/** What a queue command uses: the admin address, and the spool directory only when no relay answers there (loaded then). */
export interface QueueCliConfig {
  admin: RelayConfig['admin'];
  spool: () => Promise<RelayConfig['spool']>;
}

export async function runQueueCli(config: QueueCliConfig, args: QueueCliArgs, out: Writable, err: Writable): Promise<number> {
  const call = callFor(args);
  if (typeof call === 'string') {
    err.write(`${call}\n`);
    return 64;
  }
  let result: { status: number; body: unknown } | null = null;
  if (config.admin.listen !== false) {
    const { host, port } = parseHostPort(config.admin.listen) as { host: string; port: number };
    try {
      // The admin guard (admin-guard.ts) wants JSON on state-changing requests and the token, when set, on all.
      const headers: Record<string, string> = { 'content-type': 'application/json', ...(config.admin.token ? { authorization: `Bearer ${config.admin.token}` } : {}) };
      const response = await request(`${httpBaseUrl(localClientHost(host), port)}${call.path}`, { method: call.method, headers, ...(call.method === 'POST' ? { body: '{}' } : {}), headersTimeout: 10_000, bodyTimeout: 10_000 });
      result = { status: response.statusCode, body: await response.body.json() };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw e;
    }
  }
  if (result === null) {
    // Nothing listens on admin.listen: the relay is not running, so the files are ours.
    // With spool.backend: postgres this is the shared queue itself (leased messages are refused).
    const spoolConfig = await config.spool();
    const spool = spoolConfig.backend === 'postgres' ? new (await import('../spool/postgres/pg-spool.js')).PgSpool({ url: spoolConfig.postgres.url as string }) : new FsSpool(spoolConfig.dir);
    try {
      await spool.recover();
    } catch (e) {
      if (!(e instanceof SpoolLockedError)) throw e;
      // A relay runs on this spool but its admin API is off or elsewhere: its files are not ours
      // (a hold written here was lost; a listing deleted the tmp/ file of a message in DATA).
      const admin = config.admin.listen === false ? 'its admin API is off (admin.listen: false)' : `nothing answered on admin.listen ${config.admin.listen}`;
      err.write(`queue ${args.action}: a running relay (PID ${e.pid ?? 'unknown'}) holds spool.dir ${spoolConfig.dir} and ${admin}; nothing was read or changed. Manage its queue through its admin API (set admin.listen and restart it), or stop it first.\n`);
      return 1;
    }
    try {
      // The same dispatch as the admin API, on the spool files.
      result = await runQueueRequest(new QueueControl(spool, null, systemClock), call.method, new URL(call.path, 'http://offline'));
    } finally {
      // Recovery started filing what a crash left in the journal; that is the relay's job at its
      // next start (the journal keeps it safe until then), not this command's.
      await spool.close(0);
    }
  }
  if (result.status >= 400) {
    err.write(`${(result.body as { error?: string }).error ?? `HTTP ${result.status}`}\n`);
    return 1;
  }
  if (args.json) {
    out.write(`${JSON.stringify(result.body, null, 2)}\n`);
    return 0;
  }
  const now = Date.now();
  const body = result.body as QueueItem | QueueItem[] | Record<string, unknown>;
  if (Array.isArray(body)) {
    out.write(body.length === 0 ? 'queue is empty\n' : `${body.map((item) => describeItem(item, now)).join('\n\n')}\n-- ${body.length} message(s)\n`);
  } else if ('entry' in body && 'state' in body) out.write(`${describeItem(body as QueueItem, now)}\n`);
  else out.write(`${Object.entries(body).map(([k, v]) => `${k}: ${String(v)}`).join('\n')}\n`);
  return 0;
}
