/**
 * Fault injection for the emulator: rules consumed in order, each for `times` matching requests.
 * Used by tests and the benchmark to play Graph's and Entra's failure modes on loopback.
 */
export type EmulatorRoute = 'token' | 'sendMail' | 'createMessage' | 'uploadSession' | 'upload' | 'send' | 'getUser' | 'deleteMessage';

export interface FaultRule {
  route?: EmulatorRoute;
  mailbox?: string;
  /** Answer with this status (and a Graph- or Entra-shaped error body). */
  status?: number;
  code?: string;
  message?: string;
  /** Retry-After header value exactly as sent ("2", "1.5", an HTTP-date). */
  retryAfter?: string;
  /** Destroy the socket without answering. */
  reset?: boolean;
  /** Extra latency before handling (ms). */
  delayMs?: number;
  /** How many matching requests this rule applies to (default 1). */
  times?: number;
}

export class FaultPlan {
  private rules: Array<FaultRule & { remaining: number }> = [];

  add(...rules: FaultRule[]): void {
    for (const rule of rules) this.rules.push({ ...rule, remaining: rule.times ?? 1 });
  }

  clear(): void {
    this.rules = [];
  }

  get pending(): number {
    return this.rules.reduce((sum, r) => sum + r.remaining, 0);
  }

  /** The first rule matching this request, consumed once. */
  take(route: EmulatorRoute, mailbox: string | null): FaultRule | null {
    const index = this.rules.findIndex((r) => (r.route === undefined || r.route === route) && (r.mailbox === undefined || r.mailbox.toLowerCase() === mailbox?.toLowerCase()));
    if (index === -1) return null;
    const rule = this.rules[index] as FaultRule & { remaining: number };
    rule.remaining -= 1;
    if (rule.remaining <= 0) this.rules.splice(index, 1);
    return rule;
  }
}
