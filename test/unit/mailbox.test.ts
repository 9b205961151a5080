/** Envelope addresses as RFC 5321 mailboxes (src/mime/mailbox.ts): what passes, what is refused, and the header form. */
import { describe, expect, it } from 'vitest';
import { canonicalAddress, mailboxKey, mailboxSyntaxError } from '../../src/mime/mailbox.js';

describe('mailbox syntax', () => {
  it.each([
    'ops@contoso.example',
    'first.last+tag@contoso.example',
    "o'brien@contoso.example",
    '"alice,victim"@contoso.example',
    '"list:carol"@contoso.example',
    '"a\\"b"@contoso.example',
    'jörg@example.de',
    'user@münchen.example',
    'root@[192.0.2.1]',
    'root@[IPv6:2001:db8::1]',
  ])('accepts %s', (address) => {
    expect(mailboxSyntaxError(address)).toBeNull();
  });

  it.each([
    ['alice,victim@evil.example', /local part/],
    ['(x)bob@evil.example', /local part/],
    ['list:carol@evil.example', /local part/],
    ['dave;eve@evil.example', /local part/],
    ['a b@evil.example', /local part/],
    ['.lead@evil.example', /local part/],
    ['a..b@evil.example', /local part/],
    ['"unterminated@evil.example', /local part/],
    ['a\r\nBcc: victim@evil.example', /control character/],
    ['a\u0000b@evil.example', /control character/],
    ['postmaster', /local-part@domain/],
    ['a@', /local-part@domain/],
    ['a@evil..example', /domain/],
    ['a@-evil.example', /domain/],
    ['a@evil.example>', /domain/],
  ])('refuses %j (%s)', (address, reason) => {
    expect(mailboxSyntaxError(address)).toMatch(reason);
  });

  it('writes a local part quoted exactly when it must be, and compares quoted and unquoted forms alike', () => {
    expect(canonicalAddress('"alice,victim"@x.example')).toBe('"alice,victim"@x.example');
    expect(canonicalAddress('alice,victim@x.example')).toBe('"alice,victim"@x.example');
    expect(canonicalAddress('"plain"@x.example')).toBe('plain@x.example');
    expect(canonicalAddress('"a\\"b"@x.example')).toBe('"a\\"b"@x.example');
    expect(mailboxKey('"Alice,Victim"@X.example')).toBe(mailboxKey('alice,victim@x.example'));
  });
});
