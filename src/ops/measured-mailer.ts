/**
 * Graph latency and throttling metrics around a mailer (one definition for every tenant's client).
 * Every argument goes through unchanged: the request gate (`mayStart`, http-transport.ts) is what
 * keeps a request from leaving once a Retry-After for its mailbox is known, and a wrapper that
 * dropped it switched that off for every small message (found tracing bench figure 8).
 */
import { isHeld, type GraphOutcome } from '../graph/graph-call.js';
import type { GraphMailer } from '../graph/mailer.js';
import type { RelayMetrics } from './metrics.js';

export function measuredMailer(metrics: Pick<RelayMetrics, 'graphLatency' | 'throttled'>, inner: () => GraphMailer): GraphMailer {
  const measured = async (mailbox: string, send: () => Promise<GraphOutcome>): Promise<GraphOutcome> => {
    const end = metrics.graphLatency.startTimer();
    const outcome = await send();
    end({ status: outcome.kind === 'http' ? String(outcome.status) : 'network' });
    if (outcome.kind === 'http' && outcome.status === 429 && !isHeld(outcome)) metrics.throttled.inc({ mailbox });
    return outcome;
  };
  return {
    sendMime: (...args) => measured(args[0], () => inner().sendMime(...args)),
    sendLarge: (...args) => measured(args[0], () => inner().sendLarge(...args)),
    deleteDraft: (...args) => measured(args[0], () => inner().deleteDraft(...args)),
  };
}
