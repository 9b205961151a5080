/** The identity boundary: something that hands out Graph access tokens. */
export interface TokenProvider {
  getToken(options?: { forceRefresh?: boolean }): Promise<string>;
  /** For logs and `check`: which flow, never a secret. */
  readonly description: string;
  /** A user's delegated token (password, deviceCode) rather than the app's own: permissions are of the delegated type. */
  readonly delegated?: boolean;
}

/**
 * A token could not be obtained. `transient` errors (network, 5xx, throttling) clear by themselves;
 * the rest need a person (wrong secret, missing consent, MFA): mail waits in the queue either way.
 */
export class TokenError extends Error {
  constructor(
    message: string,
    readonly errorCode: string,
    readonly transient: boolean,
    readonly aadsts?: string,
  ) {
    super(message);
    this.name = 'TokenError';
  }

  /** Any failure while getting a token, as a TokenError (anything unexpected counts as `transient` or not, as the caller says). */
  static from(err: unknown, transient: boolean): TokenError {
    return err instanceof TokenError ? err : new TokenError(String((err as Error)?.message ?? err), 'unknown_error', transient);
  }
}
