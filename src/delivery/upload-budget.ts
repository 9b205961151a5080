/**
 * Outlook's upload limit per app and mailbox: 150 MB (PATCH, POST, PUT) in a 5-minute period
 * (graph-api-facts §3.2, §9). The large-message path asks for room for a whole message before it
 * starts, so a burst of big scans queues here instead of meeting 429s half-way through an upload.
 * Pure apart from the injected clock.
 */
export const UPLOAD_WINDOW_MS = 5 * 60_000;
/** "150 megabytes": read as decimal megabytes, the smaller reading. */
export const UPLOAD_BYTES_PER_WINDOW = 150_000_000;

export class UploadBudget {
  private readonly sent: Array<{ at: number; bytes: number }> = [];

  constructor(
    private readonly now: () => number,
    private readonly limit = UPLOAD_BYTES_PER_WINDOW,
    private readonly windowMs = UPLOAD_WINDOW_MS,
  ) {}

  private prune(now: number): void {
    let old = 0;
    while (old < this.sent.length && (this.sent[old] as { at: number }).at <= now - this.windowMs) old += 1;
    if (old > 0) this.sent.splice(0, old);
  }

  /** When `bytes` more fit the window: now, or when enough of the oldest uploads have left it. A message over the whole budget goes once the window is empty. */
  availableAt(bytes: number): number {
    const now = this.now();
    this.prune(now);
    let used = this.sent.reduce((sum, s) => sum + s.bytes, 0);
    let until = now;
    for (const s of this.sent) {
      if (used + bytes <= this.limit) break;
      used -= s.bytes;
      until = s.at + this.windowMs;
    }
    return until;
  }

  record(bytes: number): void {
    const now = this.now();
    this.prune(now);
    this.sent.push({ at: now, bytes });
  }
}

/** One budget per app and mailbox ("applies limits to each app ID and mailbox combination", §3.2). */
export class UploadBudgets {
  private readonly budgets = new Map<string, UploadBudget>();

  constructor(private readonly now: () => number) {}

  for(app: string, mailbox: string): UploadBudget {
    const key = `${app}\n${mailbox.toLowerCase()}`;
    let budget = this.budgets.get(key);
    if (!budget) {
      budget = new UploadBudget(this.now);
      this.budgets.set(key, budget);
    }
    return budget;
  }
}
