/**
 * Sessions for the setup page and the console: a random session id in a cookie that is HttpOnly
 * (scripts cannot read it) and SameSite=Strict (another site's pages cannot make the browser send
 * it), and a per-session CSRF token every form carries, compared in constant time.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const SESSION_COOKIE = 'sgr_session';

export interface Session {
  id: string;
  csrf: string;
  expiresAt: number;
}

export function randomToken(): string {
  // 32 bytes: 256 bits, out of reach of guessing for as long as any session lives.
  return randomBytes(32).toString('base64url');
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function readCookie(req: IncomingMessage, name: string): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return rest.join('=');
  }
  return null;
}

export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  create(): Session {
    const session = { id: randomToken(), csrf: randomToken(), expiresAt: this.now() + this.ttlMs };
    this.byId.set(session.id, session);
    return session;
  }

  /** The request's session, sliding its expiry; null when absent or expired. */
  find(req: IncomingMessage): Session | null {
    const id = readCookie(req, SESSION_COOKIE);
    const session = id ? this.byId.get(id) : undefined;
    if (!session) return null;
    if (session.expiresAt < this.now()) {
      this.byId.delete(session.id);
      return null;
    }
    session.expiresAt = this.now() + this.ttlMs;
    return session;
  }

  end(session: Session): void {
    this.byId.delete(session.id);
  }

  cookie(session: Session, secure = false): string {
    return `${SESSION_COOKIE}=${session.id}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
  }
}

/** True when the form's CSRF token is the session's. */
export function validCsrf(session: Session, form: URLSearchParams | FormData): boolean {
  const sent = form.get('csrf');
  return typeof sent === 'string' && sameSecret(sent, session.csrf);
}

/** Reads a small urlencoded or multipart form body (at most maxBytes) with the platform's parser. */
export async function readForm(req: IncomingMessage, maxBytes: number): Promise<FormData> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new FormTooLargeError(maxBytes);
    chunks.push(chunk as Buffer);
  }
  const type = req.headers['content-type'] ?? '';
  return new Response(Buffer.concat(chunks), { headers: { 'content-type': type } }).formData();
}

export class FormTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`form larger than ${maxBytes} bytes`);
  }
}
