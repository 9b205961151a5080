/**
 * MSAL's INetworkModule on our undici transport: MSAL then uses the same CA trust and timeouts as
 * Graph, works against a custom https authority (the emulator) without internet access, and never
 * reaches for the default https agent.
 */
import { AuthError, type INetworkModule, type NetworkRequestOptions, type NetworkResponse } from '@azure/msal-node';
import type { HttpTransport } from './http-transport.js';

export class TransportNetworkModule implements INetworkModule {
  constructor(private readonly http: HttpTransport) {}

  sendGetRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.send<T>('GET', url, options);
  }

  sendPostRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.send<T>('POST', url, options);
  }

  private async send<T>(method: string, url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    let response;
    try {
      response = await this.http.request(url, { method, ...(options?.headers ? { headers: options.headers } : {}), ...(options?.body !== undefined ? { body: options.body } : {}) });
    } catch (err) {
      // MSAL replaces any other error with "See https://aka.ms/msal.js.errors#network_error"; an
      // AuthError passes through, so the cause and its fix (network-cause.ts) reach logs and check.
      throw new AuthError('network_error', '', (err as Error).message);
    }
    // MSAL remembers a 429/5xx from the token endpoint and then refuses identical requests locally for
    // 60 s or more (ThrottlingUtils, graph-api-facts §5.2). The spool's backoff already paces retries,
    // so such answers surface as a transient error instead and never enter MSAL's throttle cache.
    if (response.status === 429 || response.status >= 500) {
      throw Object.assign(new Error(`token endpoint answered HTTP ${response.status}`), { errorCode: 'temporarily_unavailable' });
    }
    let body: unknown = {};
    try {
      body = JSON.parse(response.body.toString('utf8'));
    } catch {
      body = { error: 'invalid_response', error_description: `HTTP ${response.status} with a non-JSON body from ${new URL(url).host}` };
    }
    return { status: response.status, headers: response.headers, body: body as T };
  }
}
