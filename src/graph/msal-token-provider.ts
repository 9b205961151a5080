/**
 * Token providers on MSAL Node, one per graph.auth.method. MSAL caches tokens and renews them
 * 5 minutes before expiry (DEFAULT_TOKEN_RENEWAL_OFFSET_SEC, graph-api-facts §5.3); a 401 from Graph
 * forces one refresh via skipCache / forceRefresh.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  ConfidentialClientApplication,
  LogLevel,
  PublicClientApplication,
  type AccountInfo,
  type Configuration,
  type ICachePlugin,
} from '@azure/msal-node';
import type { AuthConfig } from '../config/schema.js';
import type { HttpTransport } from './http-transport.js';
import { TransportNetworkModule } from './msal-network.js';
import { FileTokenCachePlugin } from './token-cache-file.js';
import { TokenError, type TokenProvider } from './token-provider.js';

export interface MsalSettings {
  tenantId: string;
  clientId: string;
  authorityHost: string;
  /** Graph root, e.g. https://graph.microsoft.com; the app-only scope is `${endpoint}/.default`. */
  endpoint: string;
  auth: AuthConfig;
  http: HttpTransport;
  cachePlugin?: ICachePlugin;
  /**
   * Messages over one request's size can arrive (smtp.maxMessageSize): they go as drafts with upload
   * sessions, which need Mail.ReadWrite besides Mail.Send, delegated as well as application (§2.3, §9).
   */
  largeMessages?: boolean;
}

/**
 * Authority and instance metadata given to MSAL up front, for any authority host: MSAL then makes
 * no discovery calls (it has no opt-out for an unknown host offline otherwise, graph-api-facts §5.1).
 */
export function authorityOptions(authorityHost: string, tenantId: string) {
  const host = authorityHost.replace(/\/+$/, '');
  const hostAndPort = new URL(host).host;
  const base = `${host}/${encodeURIComponent(tenantId)}`;
  return {
    authority: base,
    knownAuthorities: [hostAndPort],
    authorityMetadata: JSON.stringify({
      token_endpoint: `${base}/oauth2/v2.0/token`,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      issuer: `${base}/v2.0`,
      jwks_uri: `${base}/discovery/v2.0/keys`,
    }),
    cloudDiscoveryMetadata: JSON.stringify({
      tenant_discovery_endpoint: `${base}/v2.0/.well-known/openid-configuration`,
      'api-version': '1.1',
      metadata: [{ preferred_network: hostAndPort, preferred_cache: hostAndPort, aliases: [hostAndPort] }],
    }),
  };
}

const TRANSIENT_CODES = new Set(['temporarily_unavailable', 'network_error', 'endpoints_resolution_error', 'invalid_response']);

/** Turns whatever MSAL threw into a TokenError with the AADSTS code, keeping only the first line of text. */
export function toTokenError(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  const e = err as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
  const text = e.errorMessage || e.message || String(err);
  const aadsts = /AADSTS(\d+)/.exec(text)?.[1];
  const errorCode = e.errorCode || 'unknown_error';
  const firstLine = text.split(/\r?\n/)[0]?.slice(0, 400) ?? text;
  const throttledOrServer = /\b(429|5\d\d)\b/.test(errorCode) || /throttl/i.test(text);
  return new TokenError(firstLine, errorCode, TRANSIENT_CODES.has(errorCode) || throttledOrServer, aadsts);
}

async function baseConfiguration(settings: MsalSettings): Promise<Configuration> {
  return {
    auth: { clientId: settings.clientId, ...authorityOptions(settings.authorityHost, settings.tenantId) },
    system: {
      networkClient: new TransportNetworkModule(settings.http),
      // The spool owns retrying; MSAL's own retries would hide outages from the scheduler.
      disableInternalRetries: true,
      loggerOptions: { piiLoggingEnabled: false, logLevel: LogLevel.Error, loggerCallback: () => undefined },
    },
    ...(settings.cachePlugin ? { cache: { cachePlugin: settings.cachePlugin } } : {}),
  };
}

async function certificateCredential(certificateFile: string, privateKeyFile: string, passphrase?: string) {
  const certPem = await readFile(certificateFile, 'utf8');
  const keyPem = await readFile(privateKeyFile, 'utf8');
  const cert = new X509Certificate(certPem);
  const privateKey = createPrivateKey(passphrase ? { key: keyPem, passphrase } : { key: keyPem }).export({ format: 'pem', type: 'pkcs8' }).toString();
  // SHA-256 thumbprint (x5t#S256, PS256) as Entra now recommends; x5c sends the certificate for SNI setups.
  return { thumbprintSha256: cert.fingerprint256.replace(/:/g, ''), privateKey, x5c: certPem };
}

/** MSAL's own renewal margin (DEFAULT_TOKEN_RENEWAL_OFFSET_SEC = 300, graph-api-facts §5.3). */
const RENEWAL_MARGIN_MS = 300_000;

class AppOnlyTokenProvider implements TokenProvider {
  /** The last token and when MSAL would start renewing it: skips MSAL's cache walk on every attempt. */
  private cached: { token: string; renewAt: number } | null = null;

  constructor(
    private readonly app: ConfidentialClientApplication,
    private readonly scope: string,
    readonly description: string,
  ) {}

  async getToken(options?: { forceRefresh?: boolean }): Promise<string> {
    if (!options?.forceRefresh && this.cached && Date.now() < this.cached.renewAt) return this.cached.token;
    try {
      const result = await this.app.acquireTokenByClientCredential({ scopes: [this.scope], skipCache: options?.forceRefresh === true });
      if (!result?.accessToken) throw new TokenError('the token endpoint returned no access token', 'no_token', true);
      this.cached = result.expiresOn ? { token: result.accessToken, renewAt: result.expiresOn.getTime() - RENEWAL_MARGIN_MS } : null;
      return result.accessToken;
    } catch (err) {
      throw toTokenError(err);
    }
  }
}

/** Delegated flows (password, device code): tokens for the signed-in mailbox, renewed with the refresh token. */
class DelegatedTokenProvider implements TokenProvider {
  readonly delegated = true;
  private account: AccountInfo | null = null;

  constructor(
    private readonly app: PublicClientApplication,
    private readonly scopes: string[],
    readonly description: string,
    private readonly signIn: (() => Promise<AccountInfo | null>) | null,
  ) {}

  async getToken(options?: { forceRefresh?: boolean }): Promise<string> {
    try {
      if (!this.account) this.account = (await this.app.getTokenCache().getAllAccounts())[0] ?? null;
      if (this.account) {
        try {
          const result = await this.app.acquireTokenSilent({ account: this.account, scopes: this.scopes, forceRefresh: options?.forceRefresh === true });
          if (result?.accessToken) return result.accessToken;
        } catch (err) {
          const e = toTokenError(err);
          // The refresh token is dead (expired, revoked, password changed): a person must sign in again.
          if (!this.signIn && !e.transient) throw loginRequired(e.message);
          if (!this.signIn) throw e;
        }
      }
      if (!this.signIn) throw loginRequired();
      this.account = await this.signIn();
      const result = this.account ? await this.app.acquireTokenSilent({ account: this.account, scopes: this.scopes }) : null;
      if (!result?.accessToken) throw new TokenError('sign-in returned no access token', 'no_token', true);
      return result.accessToken;
    } catch (err) {
      throw toTokenError(err);
    }
  }
}

export const LOGIN_REQUIRED = 'login_required';

function loginRequired(detail?: string): TokenError {
  return new TokenError(`login required: run \`smtp-graph-relay login --config FILE\` to sign in again${detail ? ` (${detail})` : ''}`, LOGIN_REQUIRED, false);
}

/**
 * Delegated scopes on the cloud's Graph resource (MSAL adds openid, profile, offline_access):
 * Mail.Send, and Mail.ReadWrite when large messages (drafts, upload sessions) are enabled.
 */
export function delegatedScopes(endpoint: string, largeMessages = false): string[] {
  const resource = endpoint.replace(/\/+$/, '');
  return [`${resource}/Mail.Send`, ...(largeMessages ? [`${resource}/Mail.ReadWrite`] : [])];
}

function deviceCodeCache(auth: Extract<AuthConfig, { method: 'deviceCode' }>): FileTokenCachePlugin {
  return new FileTokenCachePlugin(auth.tokenCacheFile, auth.tokenCacheKey);
}

/**
 * `smtp-graph-relay login`: the device-code sign-in, run by a person once. Prints the code and URL,
 * waits for the sign-in, and leaves the token cache file for the service.
 */
export async function deviceCodeLogin(settings: MsalSettings, show: (message: string) => void): Promise<{ username: string }> {
  const auth = settings.auth;
  if (auth.method !== 'deviceCode') throw new Error('login is only for graph.auth.method: deviceCode');
  const config = await baseConfiguration({ ...settings, cachePlugin: deviceCodeCache(auth) });
  const app = new PublicClientApplication(config);
  try {
    const result = await app.acquireTokenByDeviceCode({ scopes: delegatedScopes(settings.endpoint, settings.largeMessages === true), deviceCodeCallback: (response) => show(response.message) });
    if (!result?.account) throw new TokenError('sign-in returned no account', 'no_account', false);
    return { username: result.account.username };
  } catch (err) {
    throw toTokenError(err);
  }
}

export function graphScope(endpoint: string): string {
  return `${endpoint.replace(/\/+$/, '')}/.default`;
}

export async function createMsalTokenProvider(settings: MsalSettings): Promise<TokenProvider> {
  const config = await baseConfiguration(settings);
  const scope = graphScope(settings.endpoint);
  const auth = settings.auth;
  switch (auth.method) {
    case 'clientSecret':
      config.auth.clientSecret = auth.clientSecret;
      return new AppOnlyTokenProvider(new ConfidentialClientApplication(config), scope, 'client secret (app-only)');
    case 'certificate':
      config.auth.clientCertificate = await certificateCredential(auth.certificateFile, auth.privateKeyFile, auth.privateKeyPassphrase);
      return new AppOnlyTokenProvider(new ConfidentialClientApplication(config), scope, 'certificate (app-only)');
    case 'federated':
      // Read on every acquisition: workload identity rotates the projected token file (AKS refreshes it hourly).
      config.auth.clientAssertion = async () => (await readFile(auth.assertionFile, 'utf8')).trim();
      return new AppOnlyTokenProvider(new ConfidentialClientApplication(config), scope, 'federated assertion (app-only)');
    case 'password': {
      const app = new PublicClientApplication(config);
      const scopes = delegatedScopes(settings.endpoint, settings.largeMessages === true);
      const signIn = async () => (await app.acquireTokenByUsernamePassword({ scopes, username: auth.username, password: auth.password }))?.account ?? null;
      return new DelegatedTokenProvider(app, scopes, `password (delegated, ${auth.username})`, signIn);
    }
    case 'deviceCode': {
      const app = new PublicClientApplication({ ...config, cache: { cachePlugin: deviceCodeCache(auth) } });
      return new DelegatedTokenProvider(app, delegatedScopes(settings.endpoint, settings.largeMessages === true), 'device code (delegated)', null);
    }
  }
}
