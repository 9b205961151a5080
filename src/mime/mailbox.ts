/**
 * Envelope addresses as RFC 5321 §4.1.2 Mailboxes (with RFC 6531's UTF-8 for SMTPUTF8), and the
 * form they take in a header field. Graph reads recipients from To/Cc/Bcc, so an envelope address
 * written into a header must parse back as the same single mailbox: `alice,victim@evil.example`
 * (a Dot-string may not hold ",") became two recipients, `(x)bob@...` a comment and
 * `list:carol@...` a group. Such addresses are refused at MAIL/RCPT; a Quoted-string local part
 * ("alice,victim"@...) is valid and stays quoted in the header.
 */

// RFC 5321 atext (RFC 5322 §3.2.3) plus UTF8-non-ascii (RFC 6531 §3.3), minus the C1 controls.
const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u00a0-\u{10ffff}]+$/u;
// RFC 5321 qtextSMTP (%d32-33 / %d35-91 / %d93-126) plus UTF8-non-ascii; quoted-pairSMTP is "\" %d32-126.
const QUOTED_STRING = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u00a0-\u{10ffff}]|\\[\x20-\x7e])*"$/u;
// A letter-digit-hyphen label, or a U-label (RFC 6531 §3.3 sub-domain =/ U-label).
const LABEL = /^(?=.{1,63}$)[A-Za-z0-9\u00a0-\u{10ffff}](?:[A-Za-z0-9\u00a0-\u{10ffff}-]*[A-Za-z0-9\u00a0-\u{10ffff}])?$/u;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

function isDotString(local: string): boolean {
  return local.split('.').every((atom) => ATEXT.test(atom));
}

function unquote(local: string): string {
  return local.slice(1, -1).replace(/\\(.)/gu, '$1');
}

function quote(local: string): string {
  return isDotString(local) ? local : `"${local.replace(/["\\]/g, '\\$&')}"`;
}

function isDomain(domain: string): boolean {
  if (domain.startsWith('[') && domain.endsWith(']')) {
    // address-literal (RFC 5321 §4.1.3): IPv4 or "IPv6:" followed by an IPv6 address.
    const literal = domain.slice(1, -1);
    return /^(?:\d{1,3}\.){3}\d{1,3}$/.test(literal) || /^IPv6:[0-9A-Fa-f:.]+$/i.test(literal);
  }
  return domain.length <= 255 && domain.split('.').every((label) => LABEL.test(label));
}

/** Why this is not a mailbox (for the log and the reply), or null when it is one. */
export function mailboxSyntaxError(address: string): string | null {
  if (CONTROL.test(address)) return 'control character (CR, LF, NUL...) in the address';
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return 'not local-part@domain';
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (!isDotString(local) && !QUOTED_STRING.test(local)) return 'the local part must be a dot-string (letters, digits, !#$%&\'*+-/=?^_`{|}~ and dots) or "quoted"';
  if (!isDomain(domain)) return 'invalid domain';
  return null;
}

/**
 * The header form of an address from the envelope or from a header parser (which may have dropped
 * the quotes: nodemailer's addressparser reads `"a,b"@x` as `a,b@x`): the local part quoted exactly
 * when it needs to be, so the same mailbox always gives the same text. For validated addresses only.
 */
export function canonicalAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at === -1) return address;
  const raw = address.slice(0, at);
  return `${quote(QUOTED_STRING.test(raw) ? unquote(raw) : raw)}@${address.slice(at + 1)}`;
}

/** A comparison key: the same mailbox, quoted or not, gives the same key; case-insensitive, as Exchange treats addresses. */
export function mailboxKey(address: string): string {
  return canonicalAddress(address).toLowerCase();
}
