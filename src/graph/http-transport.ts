/**
 * One HTTP stack (undici) for both the token endpoint (MSAL, via its networkClient hook) and Graph,
 * so trust (system CAs + NODE_EXTRA_CA_CERTS + graph.caFile) and timeouts are decided in one place.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';

export interface HttpTransportOptions {
  /** Extra trusted CA certificates in PEM, added to the system store (never replacing it). */
  extraCaPem?: string[];
  timeoutMs: number;
  /** Proxy URL (graph.proxy); when unset, HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment apply. */
  proxy?: string;
  env?: NodeJS.ProcessEnv;
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
  const env = options.env ?? process.env;
  // One secure context for every connection: passing `ca` instead makes Node parse the whole CA
  // list again for each new TLS connection (seen at 2 % of CPU in an intake profile, bench/README.md).
  const tlsOptions = { ...(ca ? { secureContext: tls.createSecureContext({ ca }) } : {}), timeout: options.timeoutMs };
  const common = { connect: tlsOptions, headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs };
  const envProxy = env.HTTPS_PROXY ?? env.https_proxy ?? env.HTTP_PROXY ?? env.http_proxy;
  // Both MSAL and Graph traffic use this dispatcher, so one proxy setting covers both. Through a
  // proxy, https targets are reached with CONNECT and TLS is verified end to end (requestTls).
  const dispatcher: Dispatcher =
    options.proxy || envProxy
      ? new EnvHttpProxyAgent({
          ...common,
          requestTls: tlsOptions,
          ...(options.proxy ? { httpsProxy: options.proxy, httpProxy: options.proxy } : {}),
          noProxy: env.NO_PROXY ?? env.no_proxy ?? '',
        })
      : new Agent(common);
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
