/**
 * `smtp-graph-relay setup --config FILE`: the page on 127.0.0.1 (opened in a browser where there
 * is one), or with --no-browser the same questions in the terminal. Ends when the configuration is
 * saved, or on Ctrl+C.
 */
import path from 'node:path';
import { startSetupServer } from './setup-server.js';
import { runTerminalSetup } from './terminal.js';

export interface SetupOptions {
  configFile: string | undefined;
  noBrowser: boolean;
  /** Try to open the page in a browser (false: only print the address). */
  open: boolean;
}

/** A graphical session to open a browser in: always on macOS and Windows, on Linux only with a display. */
function hasDesktop(): boolean {
  if (process.platform === 'darwin' || process.platform === 'win32') return true;
  return Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
}

export async function runSetup(options: SetupOptions): Promise<number> {
  const configFile = path.resolve(options.configFile ?? process.env.RELAY_CONFIG ?? 'relay.yaml');
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  if (options.noBrowser) return runTerminalSetup(configFile, process.stdin, process.stdout, root);
  const setup = await startSetupServer({ configFile, runningAsRoot: root });
  process.stdout.write(
    `Setup for ${configFile}\n\nOpen this address in a browser on this machine (it works once):\n\n  ${setup.url}\n\n` +
      `On a server without a browser, forward the port (ssh -L ${new URL(setup.url).port}:127.0.0.1:${new URL(setup.url).port} HOST) or run: smtp-graph-relay setup --no-browser\nCtrl+C ends setup without saving.\n`,
  );
  if (options.open && hasDesktop()) {
    const { default: open } = await import('open');
    await open(setup.url).catch(() => undefined);
  }
  const cancelled = new Promise<null>((resolve) => process.once('SIGINT', () => resolve(null)));
  const saved = await Promise.race([setup.saved, cancelled]);
  // Let the page that says "Saved" finish loading before the server goes.
  await new Promise((r) => setTimeout(r, 500));
  await setup.close();
  if (saved === null) {
    process.stdout.write('\nsetup ended; nothing was saved\n');
    return 1;
  }
  process.stdout.write(`\nSaved ${saved}. Next: smtp-graph-relay serve --config ${saved} (the page lists systemd and Docker too)\n`);
  return 0;
}
