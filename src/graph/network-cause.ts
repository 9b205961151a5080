/**
 * Why a request never got an HTTP answer, in an operator's words with the fix (issue 12, item 7):
 * connection refused, DNS name not found, timeout, certificate not trusted (with the certificate's
 * subject and issuer, which is how a TLS-inspecting proxy shows itself), TLS handshake failure,
 * proxy authentication required. Before this, all of them read "token acquisition failed: See
 * https://aka.ms/msal.js.errors#network_error". The codes are Node's and undici's, as they arrive.
 */
import net from 'node:net';
import tls from 'node:tls';

export type NetworkCauseKind = 'connection refused' | 'DNS name not found' | 'timeout' | 'certificate not trusted' | 'TLS handshake failed' | 'proxy authentication required' | 'connection reset' | 'network error';

export interface NetworkCause {
  kind: NetworkCauseKind;
  code: string;
  /** What happened, naming the host (and the certificate, for trust failures). */
  detail: string;
  fix: string;
}

/** Node's certificate verification codes (X509_V_ERR_* as OpenSSL names them, plus the host-name check). */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export interface CertificateNames {
  subject: string;
  issuer: string;
}

/** The first error code along an error's cause chain. */
function codeOf(err: unknown): string {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth += 1) {
    if (typeof e.code === 'string' && e.code !== 'UND_ERR_SOCKET') return e.code;
  }
  return 'UNKNOWN';
}

function messageOf(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0] ?? '';
}

/** The cause of a failed request to `url` (reached through `proxy` when one is used). Pure. */
export function networkCause(err: unknown, url: string, proxy: string | null, certificate: CertificateNames | null = null): NetworkCause {
  const target = new URL(url);
  const host = target.host;
  const code = codeOf(err);
  const message = messageOf(err);
  const via = proxy ? ` through the proxy ${new URL(proxy).host}` : '';
  if (code === 'ECONNREFUSED') {
    const refused = proxy ? `the proxy ${new URL(proxy).host}` : host;
    return { kind: 'connection refused', code, detail: `${refused} refused the connection`, fix: proxy ? 'check graph.proxy (or HTTPS_PROXY) and that the proxy is running' : `check the host and port in graph.endpoint / graph.authorityHost, and that a firewall allows outbound HTTPS to ${target.hostname}` };
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') {
    const name = /getaddrinfo \w+ (\S+)/.exec(message)?.[1] ?? target.hostname;
    return { kind: 'DNS name not found', code, detail: `the name ${name} could not be resolved${code === 'EAI_AGAIN' ? ' (the DNS server did not answer)' : ''}`, fix: `check the host name in graph.endpoint / graph.authorityHost / graph.proxy, and the DNS servers of this machine (resolv.conf)` };
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT' || code === 'ECONNABORTED') {
    return { kind: 'timeout', code, detail: `no answer from ${host}${via} in time`, fix: `check that a firewall allows outbound HTTPS (443) to ${target.hostname}${proxy ? ' and to the proxy' : ', or set graph.proxy if outbound traffic must go through a proxy'}; graph.requestTimeout sets the limit` };
  }
  if (UNTRUSTED.has(code)) {
    const cert = certificate ? `: it presented a certificate for "${certificate.subject}" issued by "${certificate.issuer}"` : '';
    return {
      kind: 'certificate not trusted',
      code,
      detail: `the certificate of ${host}${via} is not trusted (${message})${cert}`,
      fix: 'if a TLS-inspecting proxy or firewall re-signs HTTPS traffic, add its CA certificate (PEM) with graph.caFile or NODE_EXTRA_CA_CERTS; otherwise check the system clock and the host name',
    };
  }
  if (code === 'UND_ERR_ABORTED' && /\(407\)/.test(message)) {
    return { kind: 'proxy authentication required', code: 'HTTP 407', detail: `the proxy${proxy ? ` ${new URL(proxy).host}` : ''} asked for credentials (407 Proxy Authentication Required)`, fix: 'put the proxy credentials in graph.proxy (http://user:password@proxy:port) or HTTPS_PROXY, or allow this host through the proxy without authentication' };
  }
  if (code.startsWith('ERR_SSL_') || code === 'EPROTO' || code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || /handshake|ssl routines/i.test(message)) {
    return { kind: 'TLS handshake failed', code, detail: `the TLS handshake with ${host}${via} failed (${message.replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '').slice(0, 120)})`, fix: `check that ${target.hostname}:${target.port || 443} speaks HTTPS (graph.endpoint / graph.authorityHost), and that no proxy or firewall interferes with TLS` };
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || /other side closed|socket hang up/i.test(message)) {
    return { kind: 'connection reset', code, detail: `${host}${via} closed the connection (${message})`, fix: 'usually passes by itself; if it persists, check proxies and firewalls between the relay and Microsoft' };
  }
  return { kind: 'network error', code, detail: `${host}${via}: ${message}`, fix: 'check the network path (DNS, firewall, proxy) to this host' };
}

export function formatCause(cause: NetworkCause): string {
  return `${cause.kind} (${cause.code}): ${cause.detail}; fix: ${cause.fix}`;
}

function names(cert: tls.PeerCertificate): CertificateNames {
  const dn = (d: tls.Certificate | undefined) => (d ? Object.entries(d).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`).join(', ') : '?');
  return { subject: dn(cert.subject), issuer: dn(cert.issuer) };
}

/**
 * The certificate the server (or a proxy re-signing traffic) presents, read without trusting it,
 * only to name it in the diagnosis: nothing is sent over this connection.
 */
export async function peerCertificate(url: string, proxy: string | null, timeoutMs: number): Promise<CertificateNames | null> {
  const target = new URL(url);
  const port = Number(target.port || 443);
  const tunnel = async (): Promise<net.Socket | undefined> => {
    if (!proxy) return undefined;
    const p = new URL(proxy);
    const socket = net.connect(Number(p.port || 80), p.hostname);
    const auth = p.username ? `Proxy-Authorization: Basic ${Buffer.from(`${decodeURIComponent(p.username)}:${decodeURIComponent(p.password)}`).toString('base64')}\r\n` : '';
    socket.write(`CONNECT ${target.hostname}:${port} HTTP/1.1\r\nHost: ${target.hostname}:${port}\r\n${auth}\r\n`);
    const head = await new Promise<string>((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer) => {
        text += d.toString('latin1');
        if (text.includes('\r\n\r\n')) {
          socket.off('data', onData);
          resolve(text);
        }
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
    if (!/^HTTP\/1\.[01] 200/.test(head)) throw new Error('tunnel refused');
    return socket;
  };
  let socket: tls.TLSSocket | undefined;
  const timer = new Promise<null>((resolve) => setTimeout(() => resolve(null), timeoutMs).unref());
  try {
    const probe = (async () => {
      const raw = await tunnel();
      socket = tls.connect({ host: target.hostname, port, servername: net.isIP(target.hostname) ? undefined : target.hostname, rejectUnauthorized: false, ...(raw ? { socket: raw } : {}) });
      await new Promise<void>((resolve, reject) => {
        socket?.once('secureConnect', () => resolve());
        socket?.once('error', reject);
      });
      const cert = socket.getPeerCertificate();
      return cert && cert.subject ? names(cert) : null;
    })();
    return await Promise.race([probe, timer]);
  } catch {
    return null;
  } finally {
    (socket as tls.TLSSocket | undefined)?.destroy();
  }
}
