/**
 * Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by playwright-core (no
 * browser download, ever), a fresh profile per launch. Screenshots go to test-output/screenshots/
 * (git-ignored) at the two widths the pages must work at.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { IN_CI } from './prerequisites.js';

export const CHROMIUM = '/usr/bin/chromium';
/**
 * Whether the page tests run: outside CI they are skipped (and counted) without Debian's chromium;
 * under CI=true they run and fail at launch naming it, since .ci/run installs it (issue 16, item 4).
 */
export const runPageTests = existsSync(CHROMIUM) || IN_CI;
export const SCREENSHOTS = path.resolve(__dirname, '../../test-output/screenshots');
export const WIDTHS = [1280, 390] as const;

export interface TestBrowser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'sgr-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
    viewport: { width: 1280, height: 900 },
    timeout: 60_000,
  });
  context.setDefaultTimeout(30_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Full-page screenshots of the current page at 1280 and 390 px wide; returns the files. */
export async function screenshots(page: Page, name: string): Promise<string[]> {
  await mkdir(SCREENSHOTS, { recursive: true });
  const files: string[] = [];
  const original = page.viewportSize();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    const file = path.join(SCREENSHOTS, `${name}-${width}.png`);
    await page.screenshot({ path: file, fullPage: true });
    files.push(file);
  }
  if (original) await page.setViewportSize(original);
  return files;
}

/** True when the page is wider than the viewport (something does not fit the phone width). */
export async function overflowsHorizontally(page: Page): Promise<boolean> {
  // A string, evaluated in the page: the test code is compiled without the DOM library.
  return page.evaluate<boolean>('document.documentElement.scrollWidth > window.innerWidth + 1');
}
