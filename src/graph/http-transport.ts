/**
 * One HTTP stack (undici) for both the token endpoint (MSAL, via its networkClient hook) and Graph,
 * so trust (system CAs + NODE_EXTRA_CA_CERTS + graph.caFile) and timeouts are decided in one place.
 */
import { Readable } from 'node:stream';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { Agent, DecoratorHandler, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { formatCause, networkCause, peerCertificate, type NetworkCause } from './network-cause.js';

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

export interface RequestInit {
  method: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /**
   * Asked when the connection is ready and right before the first byte of the request is written
   * (undici's onRequestStart): false holds the request back (RequestHeldError), nothing is sent.
   * A request that waited for a new connection (TLS handshake, a proxy's CONNECT) therefore never
   * leaves after a Retry-After arrived in the meantime (issue 12, item 2).
   */
  mayStart?: () => boolean;
}

/** The request was held back by `mayStart` before any byte of it was written. */
export class RequestHeldError extends Error {
  readonly code = 'RELAY_REQUEST_HELD';
  constructor() {
    super('request held back before it was sent: the mailbox is paused by a Retry-After');
  }
}

/** A request that got no HTTP answer, with its cause and fix in the message (network-cause.ts). */
export class NetworkFailure extends Error {
  readonly code: string;
  constructor(readonly networkCause: NetworkCause) {
    super(formatCause(networkCause));
    this.code = networkCause.code;
  }
}

// undici's DecoratorHandler forwards every callback (new and legacy style); its typings omit the methods.
const ForwardingHandler = DecoratorHandler as unknown as new (handler: Dispatcher.DispatchHandler) => Dispatcher.DispatchHandler & { onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void };

class GateHandler extends ForwardingHandler {
  constructor(
    handler: Dispatcher.DispatchHandler,
    private readonly mayStart: () => boolean,
  ) {
    super(handler);
  }

  override onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    if (!this.mayStart()) {
      controller.abort(new RequestHeldError());
      return;
    }
    super.onRequestStart(controller, context);
  }
}

export interface HttpTransport {
  request(url: string, init: RequestInit): Promise<HttpResponse>;
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

/** NO_PROXY as a list of host names or domain suffixes ("*" for all). */
function noProxyMatches(noProxy: string, url: string): boolean {
  const host = new URL(url).hostname;
  return noProxy.split(/[\s,]+/).filter(Boolean).some((entry) => entry === '*' || host === entry.replace(/^\./, '') || host.endsWith(entry.startsWith('.') ? entry : `.${entry}`));
}

/**
 * Bodies over this go out in 64 KiB pieces, so TLS encrypts them between event-loop turns instead
 * of in one block: a 4 MB base64 draft written at once held the loop for ~25-50 ms of a 65-100 ms
 * stall (cpu profile of mime-scan-stall.test.ts; issue 11, item 13). The length is still declared.
 */
const STREAM_BODY_OVER = 256 * 1024;
const PIECE = 64 * 1024;

function inPieces(body: string | Buffer | undefined, headers: Record<string, string> | undefined): { body: string | Buffer | Readable | undefined; headers: Record<string, string> | undefined } {
  if (body === undefined || body.length <= STREAM_BODY_OVER / 4) return { body, headers };
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  if (bytes.length <= STREAM_BODY_OVER) return { body, headers };
  async function* pieces(): AsyncIterable<Buffer> {
    for (let offset = 0; offset < bytes.length; offset += PIECE) yield bytes.subarray(offset, offset + PIECE);
  }
  return { body: Readable.from(pieces(), { objectMode: false }), headers: { ...headers, 'content-length': String(bytes.length) } };
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
  const gate = (mayStart: () => boolean) => dispatcher.compose((dispatch) => (opts, handler) => dispatch(opts, new GateHandler(handler, mayStart)));
  return {
    async request(url, init) {
      let response: Dispatcher.ResponseData;
      try {
        const { body, headers } = inPieces(init.body, init.headers);
        response = await request(url, {
          method: init.method as Dispatcher.HttpMethod,
          headers,
          body,
          dispatcher: init.mayStart ? gate(init.mayStart) : dispatcher,
        });
      } catch (err) {
        if (err instanceof RequestHeldError) throw err;
        const proxy = options.proxy ?? (envProxy && !noProxyMatches(env.NO_PROXY ?? env.no_proxy ?? '', url) ? envProxy : null);
        let cause = networkCause(err, url, proxy);
        // Name the certificate that was not trusted: a TLS-inspecting proxy shows itself as its issuer.
        if (cause.kind === 'certificate not trusted') cause = networkCause(err, url, proxy, await peerCertificate(url, proxy, Math.min(options.timeoutMs, 5000)));
        throw new NetworkFailure(cause);
      }
      const body = Buffer.from(await response.body.arrayBuffer());
      return { status: response.statusCode, headers: flattenHeaders(response.headers), body };
    },
    close: () => dispatcher.close(),
  };
}
