/**
 * One HTTP stack (undici) for both the token endpoint (MSAL, via its networkClient hook) and Graph,
 * so trust (system CAs + NODE_EXTRA_CA_CERTS + graph.caFile) and timeouts are decided in one place.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';

export interface HttpTransportOptions {
  /** Extra trusted CA certificates in PEM, added to the system store (never replacing it). */
  extraCaPem?: string[];
  timeoutMs: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface HttpTransport {
  request(url: string, init: { method: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<HttpResponse>;
  close(): Promise<void>;
}

function trustedCas(extra: string[]): string[] | undefined {
  if (extra.length === 0) return undefined; // Node's default store already includes NODE_EXTRA_CA_CERTS
  const fromEnv = process.env.NODE_EXTRA_CA_CERTS ? [readFileSync(process.env.NODE_EXTRA_CA_CERTS, 'utf8')] : [];
  return [...tls.rootCertificates, ...fromEnv, ...extra];
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value !== undefined) out[key.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

export function createHttpTransport(options: HttpTransportOptions): HttpTransport {
  const ca = trustedCas(options.extraCaPem ?? []);
  const dispatcher: Dispatcher = new Agent({
    connect: { ...(ca ? { ca } : {}), timeout: options.timeoutMs },
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
  });
  return {
    async request(url, init) {
      const response = await request(url, {
        method: init.method as Dispatcher.HttpMethod,
        headers: init.headers,
        body: init.body,
        dispatcher,
      });
      const body = Buffer.from(await response.body.arrayBuffer());
      return { status: response.statusCode, headers: flattenHeaders(response.headers), body };
    },
    close: () => dispatcher.close(),
  };
}
