/**
 * The Entra ID (v2 endpoint) half of the emulator: OpenID metadata, instance discovery, the token
 * endpoint (client credentials with secret or client assertion, password, device code,
 * refresh_token) and the device-code endpoint, with Entra's error shapes (graph-api-facts §4).
 */
import { createPublicKey, randomBytes, randomUUID, verify, X509Certificate } from 'node:crypto';

export interface EmulatedApp {
  clientId: string;
  tenantId: string;
  secrets: string[];
  expiredSecrets?: string[];
  /** PEM certificates whose key may sign client assertions. */
  certificates?: string[];
  /** Opaque federated assertions accepted as client_assertion (workload identity tokens). */
  federatedAssertions?: string[];
  /** Application permissions granted with admin consent (e.g. Mail.Send, Mail.ReadWrite, User.Read.All). */
  roles: string[];
  /** "Allow public client flows" (needed for password and device code). */
  publicClient?: boolean;
  /** Delegated permissions consented (e.g. Mail.Send). Empty: AADSTS65001. */
  delegatedScopes?: string[];
}

export interface EmulatedUser {
  username: string;
  password: string;
  /** Simulates per-user MFA (AADSTS50076), MFA registration (50079) or a Conditional Access block (53003). */
  block?: '50076' | '50079' | '53003';
}

export interface IssuedToken {
  clientId: string;
  tenantId: string;
  roles: string[];
  /** The signed-in user for delegated tokens. */
  user?: string;
  scopes: string[];
  expiresAt: number;
}

export interface TokenReply {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

interface DeviceCodeState {
  clientId: string;
  tenantId: string;
  scopes: string[];
  userCode: string;
  expiresAt: number;
  approvedBy?: string;
  declined?: boolean;
}

/** Entra's error shape: error, error_description with trace lines, error_codes, ids, optional suberror. */
export function aadError(status: number, error: string, code: number, text: string, suberror?: string): TokenReply {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return {
    status,
    body: {
      error,
      error_description: `AADSTS${code}: ${text}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `https://login.microsoftonline.com/error?code=${code}`,
      ...(suberror ? { suberror } : {}),
    },
  };
}

const b64url = (value: string | Buffer) => Buffer.from(value).toString('base64url');

function unsignedJwt(claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ typ: 'JWT', alg: 'none' }))}.${b64url(JSON.stringify(claims))}.`;
}

export class IdentityEmulator {
  readonly apps = new Map<string, EmulatedApp>();
  readonly users = new Map<string, EmulatedUser>();
  readonly tokens = new Map<string, IssuedToken>();
  private readonly refreshTokens = new Map<string, { clientId: string; tenantId: string; user: string; scopes: string[] }>();
  private readonly deviceCodes = new Map<string, DeviceCodeState>();
  /** Lifetime of issued access tokens; short values exercise MSAL's renewal. */
  tokenLifetimeSeconds = 3599;
  deviceCodeIntervalSeconds = 1;
  /** Counts of successful grants by grant_type, for tests. */
  readonly grants = new Map<string, number>();

  constructor(
    private readonly baseUrl: () => string,
    private readonly graphResource: () => string,
    readonly tenants: Set<string>,
  ) {}

  openIdConfiguration(tenant: string): Record<string, unknown> {
    const base = `${this.baseUrl()}/${tenant}`;
    return {
      token_endpoint: `${base}/oauth2/v2.0/token`,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      jwks_uri: `${base}/discovery/v2.0/keys`,
      issuer: `${base}/v2.0`,
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    };
  }

  instanceDiscovery(): Record<string, unknown> {
    const host = new URL(this.baseUrl()).host;
    return {
      tenant_discovery_endpoint: `${this.baseUrl()}/{tenant}/v2.0/.well-known/openid-configuration`,
      'api-version': '1.1',
      metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
    };
  }

  revokeRefreshTokens(): void {
    this.refreshTokens.clear();
  }

  approveDeviceCode(userCode: string, username: string): boolean {
    for (const state of this.deviceCodes.values()) {
      if (state.userCode === userCode) {
        state.approvedBy = username;
        return true;
      }
    }
    return false;
  }

  pendingDeviceCodes(): string[] {
    return [...this.deviceCodes.values()].filter((s) => !s.approvedBy).map((s) => s.userCode);
  }

  deviceCode(tenant: string, form: URLSearchParams): TokenReply {
    const problem = this.checkTenantAndApp(tenant, form.get('client_id'));
    if ('status' in problem) return problem;
    const deviceCode = randomBytes(24).toString('base64url');
    const userCode = randomBytes(4).toString('hex').toUpperCase();
    this.deviceCodes.set(deviceCode, { clientId: problem.clientId, tenantId: tenant, scopes: (form.get('scope') ?? '').split(' ').filter(Boolean), userCode, expiresAt: Date.now() + 900_000 });
    const verificationUri = `${this.baseUrl()}/devicelogin`;
    return {
      status: 200,
      body: {
        device_code: deviceCode,
        user_code: userCode,
        verification_uri: verificationUri,
        expires_in: 900,
        interval: this.deviceCodeIntervalSeconds,
        message: `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${userCode} to authenticate.`,
      },
    };
  }

  private checkTenantAndApp(tenant: string, clientId: string | null): TokenReply | EmulatedApp {
    if (!this.tenants.has(tenant)) return aadError(400, 'invalid_request', 90002, `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
    const app = clientId ? this.apps.get(clientId) : undefined;
    if (!app || app.tenantId !== tenant) {
      return aadError(400, 'unauthorized_client', 700016, `Application with identifier '${clientId ?? ''}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`);
    }
    return app;
  }

  private verifyClientAssertion(app: EmulatedApp, assertion: string, tokenUrl: string): string | null {
    if (app.federatedAssertions?.includes(assertion)) return null;
    const [headerPart, payloadPart, signaturePart] = assertion.split('.');
    if (!headerPart || !payloadPart || signaturePart === undefined) return 'AADSTS50027: JWT token is invalid or malformed.';
    let header: Record<string, string>;
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(headerPart, 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(payloadPart, 'base64url').toString('utf8'));
    } catch {
      return 'AADSTS50027: JWT token is invalid or malformed.';
    }
    const cert = (app.certificates ?? []).map((pem) => new X509Certificate(pem)).find((c) => {
      const sha256 = Buffer.from(c.fingerprint256.replace(/:/g, ''), 'hex').toString('base64url');
      const sha1 = Buffer.from(c.fingerprint.replace(/:/g, ''), 'hex').toString('base64url');
      return header['x5t#S256'] === sha256 || header['x5t'] === sha1;
    });
    if (!cert) return `AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${header['x5t#S256'] ?? header['x5t'] ?? ''}']`;
    const data = Buffer.from(`${headerPart}.${payloadPart}`);
    const signature = Buffer.from(signaturePart, 'base64url');
    const key = createPublicKey(cert.publicKey.export({ format: 'pem', type: 'spki' }));
    const ok =
      header.alg === 'PS256'
        ? verify('sha256', data, { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 }, signature)
        : header.alg === 'RS256'
          ? verify('sha256', data, key, signature)
          : false;
    if (!ok) return 'AADSTS700027: Client assertion failed signature validation.';
    if (claims.aud !== tokenUrl) return `AADSTS700016: The audience '${String(claims.aud)}' of the client assertion is not the token endpoint.`;
    if (claims.iss !== app.clientId || claims.sub !== app.clientId) return 'AADSTS700023: Client assertion issuer and subject must be the client id.';
    if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return 'AADSTS700024: Client assertion is not within its valid time range.';
    return null;
  }

  /** Confidential client authentication (secret, Basic auth, or client assertion). null = authenticated. */
  private authenticateClient(app: EmulatedApp, form: URLSearchParams, tenant: string, basicSecret: string | null): TokenReply | null {
    const secret = form.get('client_secret') ?? basicSecret;
    const assertion = form.get('client_assertion');
    if (secret !== null) {
      if (app.expiredSecrets?.includes(secret)) return aadError(401, 'invalid_client', 7000222, `The provided client secret keys for app '${app.clientId}' are expired. Visit the Azure portal to create new keys for your app.`);
      if (!app.secrets.includes(secret)) return aadError(401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`);
      return null;
    }
    if (assertion !== null) {
      const problem = this.verifyClientAssertion(app, assertion, `${this.baseUrl()}/${tenant}/oauth2/v2.0/token`);
      if (problem) {
        const code = Number(/AADSTS(\d+)/.exec(problem)?.[1] ?? 700027);
        return aadError(401, 'invalid_client', code, problem.replace(/^AADSTS\d+: /, ''));
      }
      return null;
    }
    return aadError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
  }

  private issue(app: EmulatedApp, tenant: string, scopes: string[], user?: string): TokenReply {
    const now = Date.now();
    const lifetime = this.tokenLifetimeSeconds;
    const roles = user ? [] : app.roles;
    // A delegated token carries the consented scopes that were asked for ("https://graph.../Mail.Send"
    // or "Mail.Send"), as Entra issues them: a relay that never asks for Mail.ReadWrite never gets it.
    const asked = new Set(scopes.map((s) => s.replace(/^https?:\/\/[^/]+\//, '')));
    const delegated = user ? (app.delegatedScopes ?? []).filter((s) => asked.has(s) || asked.has('.default')) : [];
    const accessToken = unsignedJwt({ aud: this.graphResource(), tid: tenant, appid: app.clientId, roles, scp: delegated.join(' '), upn: user, iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + lifetime, jti: randomUUID() });
    this.tokens.set(accessToken, { clientId: app.clientId, tenantId: tenant, roles, user, scopes: user ? delegated : roles, expiresAt: now + lifetime * 1000 });
    const body: Record<string, unknown> = { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: accessToken };
    if (user) {
      const uid = Buffer.from(user).toString('hex').slice(0, 32).padEnd(32, '0');
      const refreshToken = randomBytes(32).toString('base64url');
      this.refreshTokens.set(refreshToken, { clientId: app.clientId, tenantId: tenant, user, scopes });
      body.scope = [...scopes.filter((s) => !['openid', 'profile', 'offline_access'].includes(s)), 'openid', 'profile', 'offline_access'].join(' ');
      body.refresh_token = refreshToken;
      body.id_token = unsignedJwt({ aud: app.clientId, iss: `${this.baseUrl()}/${tenant}/v2.0`, tid: tenant, oid: uid, sub: uid, preferred_username: user, name: user, iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + 3600, ver: '2.0' });
      body.client_info = b64url(JSON.stringify({ uid, utid: tenant }));
    }
    return { status: 200, body };
  }

  private count(grant: string): void {
    this.grants.set(grant, (this.grants.get(grant) ?? 0) + 1);
  }

  token(tenant: string, form: URLSearchParams, basicAuth: { id: string; secret: string } | null): TokenReply {
    const checked = this.checkTenantAndApp(tenant, form.get('client_id') ?? basicAuth?.id ?? null);
    if ('status' in checked) return checked;
    const app = checked;
    // Entra documents the RFC 8628 URN; MSAL sends the short "device_code" (msal-common GrantType): accept both.
    const rawGrant = form.get('grant_type');
    const grantType = rawGrant === 'device_code' ? 'urn:ietf:params:oauth:grant-type:device_code' : rawGrant;
    const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);

    if (grantType === 'client_credentials') {
      const authProblem = this.authenticateClient(app, form, tenant, basicAuth?.secret ?? null);
      if (authProblem) return authProblem;
      if (scopes.length !== 1 || !scopes[0]?.endsWith('/.default')) {
        return aadError(400, 'invalid_scope', 1002012, `The provided value for scope ${scopes.join(' ')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
      }
      this.count(grantType);
      return this.issue(app, tenant, scopes);
    }

    if (grantType === 'password' || grantType === 'urn:ietf:params:oauth:grant-type:device_code' || grantType === 'refresh_token') {
      if (!app.publicClient && form.get('client_secret') === null && form.get('client_assertion') === null) {
        return aadError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
      }
    }

    if (grantType === 'password') {
      const username = (form.get('username') ?? '').toLowerCase();
      const user = this.users.get(username);
      if (!user || user.password !== form.get('password')) return aadError(400, 'invalid_grant', 50126, 'Error validating credentials due to invalid username or password.');
      if (user.block === '50076') return aadError(400, 'invalid_grant', 50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.", 'basic_action');
      if (user.block === '50079') return aadError(400, 'invalid_grant', 50079, 'Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication.', 'basic_action');
      if (user.block === '53003') return aadError(400, 'invalid_grant', 53003, 'Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.', 'message_only');
      if (!app.delegatedScopes || app.delegatedScopes.length === 0) return aadError(400, 'invalid_grant', 65001, `The user or administrator has not consented to use the application with ID '${app.clientId}'. Send an interactive authorization request for this user and resource.`, 'consent_required');
      this.count(grantType);
      return this.issue(app, tenant, scopes, username);
    }

    if (grantType === 'urn:ietf:params:oauth:grant-type:device_code') {
      const state = this.deviceCodes.get(form.get('device_code') ?? '');
      if (!state) return aadError(400, 'bad_verification_code', 70019, 'Verification code expired or invalid.');
      if (state.expiresAt < Date.now()) return aadError(400, 'expired_token', 70020, 'The provided authorization code or refresh token has expired due to inactivity.');
      if (state.declined) return aadError(400, 'authorization_declined', 70018, 'The user declined the authorization request.');
      if (!state.approvedBy) return aadError(400, 'authorization_pending', 70016, 'OAuth 2.0 device flow error. Authorization is pending. Continue polling.');
      this.deviceCodes.delete(form.get('device_code') ?? '');
      this.count('device_code');
      return this.issue(app, tenant, state.scopes, state.approvedBy);
    }

    if (grantType === 'refresh_token') {
      const refresh = this.refreshTokens.get(form.get('refresh_token') ?? '');
      if (!refresh || refresh.clientId !== app.clientId) return aadError(400, 'invalid_grant', 700082, 'The refresh token has expired due to inactivity. The token was issued on a date and was inactive for 90 days.');
      this.refreshTokens.delete(form.get('refresh_token') ?? '');
      this.count(grantType);
      return this.issue(app, tenant, scopes.length > 0 ? scopes : refresh.scopes, refresh.user);
    }

    return aadError(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grantType ?? ''}'.`);
  }

  /** Resolves a bearer token; null when missing, unknown or expired. */
  lookup(authorization: string | undefined): { token: IssuedToken | null; problem: string | null } {
    if (!authorization || !/^Bearer\s+\S/.test(authorization)) return { token: null, problem: 'Access token is empty.' };
    const token = this.tokens.get(authorization.replace(/^Bearer\s+/, ''));
    if (!token) return { token: null, problem: 'Access token validation failure. Invalid audience.' };
    if (token.expiresAt <= Date.now()) return { token: null, problem: 'Lifetime validation failed, the token is expired.' };
    return { token, problem: null };
  }

  /** Makes every issued access token invalid at once (Graph then answers 401). */
  expireAllAccessTokens(): void {
    for (const token of this.tokens.values()) token.expiresAt = 0;
  }
}
