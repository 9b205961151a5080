/**
 * Polls a condition (no fixed sleeps): resolves as soon as it holds, fails after `ms`; `context`
 * (for example a child process's output) is added to the failure so a CI log shows why.
 */
export async function until(check: () => Promise<boolean> | boolean, ms = 10_000, context?: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not reached within ${ms} ms${context ? `\n${context()}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
