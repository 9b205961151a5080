/**
 * Demo mode: with no configuration, the relay runs against the embedded Graph emulator so a
 * newcomer can send with swaks and see the message Graph would have received.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { validateConfig } from './config/load.js';
import type { RelayConfig } from './config/schema.js';
import { startEmulator, type RunningEmulator } from './emulator/server.js';

export const DEMO_MAILBOX = 'relay@demo.example';

export interface DemoSetup {
  config: RelayConfig;
  emulator: RunningEmulator;
  deliveredDir: string;
}

export async function startDemo(baseDir: string, listen: string, adminListen: string | false = '127.0.0.1:9925'): Promise<DemoSetup> {
  const deliveredDir = path.resolve(baseDir, 'delivered');
  const secret = randomBytes(24).toString('base64url');
  const emulator = await startEmulator({
    outDir: deliveredDir,
    tenantId: 'demo-tenant',
    apps: [{ clientId: 'demo-client', tenantId: 'demo-tenant', secrets: [secret], roles: ['Mail.Send', 'Mail.ReadWrite', 'User.Read.All'] }],
    mailboxes: [{ upn: DEMO_MAILBOX, displayName: 'Demo relay mailbox' }],
  });
  const config = validateConfig(
    {
      smtp: { listen },
      admin: { listen: adminListen },
      graph: {
        tenantId: 'demo-tenant',
        clientId: 'demo-client',
        auth: { method: 'clientSecret', clientSecret: secret },
        mailbox: DEMO_MAILBOX,
        authorityHost: emulator.url,
        endpoint: emulator.url,
      },
      spool: { dir: path.resolve(baseDir, 'spool') },
      // Fast retries: the demo is for watching things happen.
      delivery: { retry: { minDelay: '2s', maxDelay: '30s' } },
    },
    {},
    'demo',
  );
  return { config, emulator, deliveredDir };
}
