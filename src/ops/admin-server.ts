/**
 * The admin HTTP listener (admin.listen, loopback by default): Prometheus /metrics, /healthz
 * (process alive), /readyz (spool writable, token obtainable, not "login required"), the queue
 * commands for a running relay, and the log level at run time.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { httpBaseUrl } from '../config/units.js';
import type { Logger } from '../log.js';
import { guardAdminRequest } from './admin-guard.js';
import type { RelayMetrics } from './metrics.js';
import { runQueueRequest, type QueueControl } from './queue-control.js';

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export interface AdminDeps {
  metrics: RelayMetrics;
  queue: QueueControl;
  readiness: () => Promise<Readiness>;
  logger: Logger;
  /** admin.token: when set, every endpoint but /healthz needs it as a Bearer token. */
  token?: string | undefined;
  /** The console's pages (GET / and /console/...): true when it answered; it applies its own guard. */
  console?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
}

export interface RunningAdmin {
  url: string;
  close(): Promise<void>;
}

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace']);

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export async function startAdmin(host: string, port: number, deps: AdminDeps): Promise<RunningAdmin> {
  const policy = { listenHost: host, token: deps.token };
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // The console's pages log in with a form and post forms with CSRF tokens (console/page-guard.ts).
    if (deps.console && (await deps.console(req, res))) return;
    // Host, Origin, Content-Type and token first, for every route (admin-guard.ts says why).
    const allowed = guardAdminRequest(req, res, policy, (refusal) =>
      deps.logger.warn({ event: 'admin.refused', status: refusal.status, reason: refusal.reason, method: req.method, path: req.url?.split('?')[0], remote: req.socket.remoteAddress }, 'admin request refused'),
    );
    if (!allowed) return;
    const url = new URL(req.url ?? '/', 'http://admin');
    const method = req.method ?? 'GET';
    const parts = url.pathname.split('/').filter(Boolean);
    if (method === 'GET' && url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
    if (method === 'GET' && url.pathname === '/readyz') {
      const readiness = await deps.readiness();
      return json(res, readiness.ready ? 200 : 503, readiness);
    }
    if (method === 'GET' && url.pathname === '/metrics') {
      const body = await deps.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
      return void res.end(body);
    }
    if (method === 'PUT' && url.pathname === '/log-level') {
      const level = url.searchParams.get('level') ?? '';
      if (!LEVELS.has(level)) return json(res, 400, { error: `level must be one of ${[...LEVELS].join(', ')}` });
      const previous = deps.logger.level;
      deps.logger.level = level;
      deps.logger.warn({ event: 'admin.log_level', from: previous, to: level }, 'log level changed');
      return json(res, 200, { level });
    }
    if (parts[0] === 'queue') {
      const { status, body } = await runQueueRequest(deps.queue, method, url);
      return json(res, status, body);
    }
    return json(res, 404, { error: 'not found' });
  };

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      deps.logger.error({ event: 'admin.error', err: (err as Error).message }, 'admin request failed');
      if (!res.headersSent) json(res, 500, { error: (err as Error).message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: httpBaseUrl(host, address.port),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
