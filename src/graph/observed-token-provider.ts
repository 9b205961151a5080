/**
 * Wraps a TokenProvider to remember how the last acquisitions went (for /readyz, metrics and the
 * "login required" state) without changing what it does.
 */
import { LOGIN_REQUIRED } from './msal-token-provider.js';
import { TokenError, type TokenProvider } from './token-provider.js';

export interface TokenHealth {
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: { code: string; message: string } | null;
  loginRequired: boolean;
}

export class ObservedTokenProvider implements TokenProvider {
  readonly health: TokenHealth = { lastSuccessAt: null, lastFailureAt: null, lastError: null, loginRequired: false };

  constructor(
    private readonly inner: TokenProvider,
    private readonly now: () => number,
    private readonly onResult?: (ok: boolean) => void,
  ) {}

  get description(): string {
    return this.inner.description;
  }

  get delegated(): boolean {
    return this.inner.delegated === true;
  }

  async getToken(options?: { forceRefresh?: boolean }): Promise<string> {
    try {
      const token = await this.inner.getToken(options);
      this.health.lastSuccessAt = this.now();
      this.health.loginRequired = false;
      this.onResult?.(true);
      return token;
    } catch (err) {
      const e = TokenError.from(err, true);
      this.health.lastFailureAt = this.now();
      this.health.lastError = { code: e.aadsts ? `AADSTS${e.aadsts}` : e.errorCode, message: e.message };
      this.health.loginRequired = e.errorCode === LOGIN_REQUIRED;
      this.onResult?.(false);
      throw e;
    }
  }
}
