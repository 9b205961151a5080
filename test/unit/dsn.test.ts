/** The bounce (src/delivery/dsn.ts) is UTF-8 and its generated fields cannot be split by an address. */
import { describe, expect, it } from 'vitest';
import { buildDsn, type DsnInput } from '../../src/delivery/dsn.js';
import type { SpoolEntry } from '../../src/spool/entry.js';

function input(mailFrom: string, rcptTo: string[], to = mailFrom): DsnInput {
  const failed = { id: 'Q1', receivedAt: 0, envelope: { mailFrom, rcptTo }, mailbox: 'relay@contoso.example' } as unknown as SpoolEntry;
  return { failed, reason: 'HTTP 400 ErrorInvalidRecipients\r\nBcc: reason@evil.example', expired: false, originalHeader: Buffer.from('Subject: s\r\n'), reportingHost: 'relay.test', fromMailbox: 'relay@contoso.example', to, now: 0, boundary: 'b', messageId: '<m@relay.test>' };
}

const headerOf = (dsn: Buffer) => dsn.toString('utf8').slice(0, dsn.indexOf('\r\n\r\n'));

describe('delivery status notification', () => {
  it('encodes the generated parts as UTF-8', () => {
    const dsn = buildDsn(input('jörg@example.de', ['ops@contoso.example']));
    expect(dsn.includes(Buffer.from('To: <jörg@example.de>\r\n', 'utf8'))).toBe(true);
  });

  it('refuses to address a bounce to something that is not a mailbox (a crafted sender cannot add a Bcc)', () => {
    expect(() => buildDsn(input('a@x.example>\r\nBcc: <victim@evil.example', ['ops@contoso.example']))).toThrow(/not a valid mailbox/);
  });

  it('keeps control characters of recipients and reasons out of every header line', () => {
    const dsn = buildDsn(input('sender@contoso.example', ['ok@contoso.example\r\nBcc: rcpt@evil.example']));
    const text = dsn.toString('utf8');
    expect(headerOf(dsn)).not.toMatch(/^Bcc:/im);
    expect(text).not.toMatch(/^Bcc:/im);
  });

  it('quotes a local part that needs it in the To field', () => {
    expect(buildDsn(input('"a,b"@contoso.example', ['ops@contoso.example'])).toString('utf8')).toContain('\r\nTo: <"a,b"@contoso.example>\r\n');
  });
});
