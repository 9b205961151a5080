/** `smtp-graph-relay login`: device-code sign-in that leaves the token cache for the service. */
import type { Writable } from 'node:stream';
import { createGraphTransport, msalSettings } from '../app.js';
import type { RelayConfig } from '../config/schema.js';
import { deviceCodeLogin } from '../graph/msal-token-provider.js';
import { TokenError } from '../graph/token-provider.js';
import { diagnoseAadsts } from './diagnosis.js';

export async function runLogin(config: RelayConfig, out: Writable, extraCaPem: string[] = []): Promise<number> {
  const auth = config.graph.auth;
  if (auth.method !== 'deviceCode') {
    out.write(`login is for graph.auth.method: deviceCode (this config uses ${auth.method}, which needs no sign-in)\n`);
    return 64;
  }
  const http = await createGraphTransport(config, extraCaPem);
  try {
    const { username } = await deviceCodeLogin(msalSettings(config, http), (message) => out.write(`${message}\n`));
    out.write(`signed in as ${username}; token cache written to ${auth.tokenCacheFile}\n`);
    out.write('restart the relay (or let it retry) to deliver as this mailbox.\n');
    return 0;
  } catch (err) {
    const e = TokenError.from(err, false);
    const d = diagnoseAadsts(e.aadsts);
    out.write(`sign-in failed: ${e.aadsts ? `AADSTS${e.aadsts} ` : ''}${d ? d.cause : e.message}\n`);
    if (d) out.write(`fix: ${d.fix}\n`);
    return 1;
  } finally {
    await http.close().catch(() => undefined);
  }
}
