import { describe, expect, it } from 'vitest';
import { addressesIn, parseHeaderBlock, startsWithHeaderField } from '../../src/mime/header-block.js';
import { bccField, rewriteHeader, type TraceInfo } from '../../src/mime/header-rewrite.js';
import { normalizeLineEndings } from '../../src/mime/line-endings.js';
import { formatRfc5322Date } from '../../src/mime/rfc5322-date.js';

const trace: TraceInfo = { queueId: '0MWXQ0000000000ABCD', hostname: 'relay.test', heloName: 'dev', clientAddress: '127.0.0.1', protocol: 'ESMTP', receivedAt: Date.parse('2026-11-26T15:00:00Z') };
const block = (text: string) => parseHeaderBlock(Buffer.from(text));

describe('line endings', () => {
  it('turns bare LF into CRLF and leaves CRLF alone', () => {
    const state = { previousWasCr: false };
    expect(normalizeLineEndings(Buffer.from('a\nb\r\nc\n'), state).toString()).toBe('a\r\nb\r\nc\r\n');
  });

  it('does not double a CR that ended the previous chunk', () => {
    const state = { previousWasCr: false };
    const first = normalizeLineEndings(Buffer.from('a\r'), state);
    const second = normalizeLineEndings(Buffer.from('\nb\n'), state);
    expect(Buffer.concat([first, second]).toString()).toBe('a\r\nb\r\n');
  });

  it('returns the same buffer when nothing needs changing', () => {
    const chunk = Buffer.from('x\r\ny\r\n');
    expect(normalizeLineEndings(chunk, { previousWasCr: false })).toBe(chunk);
  });
});

describe('header block', () => {
  it('keeps folded fields together with their raw bytes', () => {
    const fields = block('Subject: one\r\n two\r\nTo: a@x.example,\r\n\tb@x.example\r\n');
    expect(fields.map((f) => f.name)).toEqual(['subject', 'to']);
    expect(fields[0]?.value).toBe('one two');
    expect(fields[1]?.raw.toString()).toBe('To: a@x.example,\r\n\tb@x.example\r\n');
  });

  it('parses groups, display names and UTF-8 addresses', () => {
    expect(addressesIn('"Ops, Team" <Ops@X.example>, undisclosed:;, friends: a@x.example, b@y.example;')).toEqual(['ops@x.example', 'a@x.example', 'b@y.example']);
    expect(addressesIn('Jörg <jörg@bücher.example>')).toEqual(['jörg@bücher.example']);
  });

  it('recognises content that does not start with a header field', () => {
    expect(startsWithHeaderField(Buffer.from('Subject: x\r\n'))).toBe(true);
    expect(startsWithHeaderField(Buffer.from('just a body line\r\n'))).toBe(false);
  });
});

describe('header rewrite', () => {
  it('adds a Received field on top, Date and Message-ID when missing', () => {
    const result = rewriteHeader(block('Subject: hi\r\n'), ['a@x.example'], trace);
    expect(result.header.toString()).toBe(
      // The only recipient is a Bcc: the trace field does not name it (issue 11 item 4).
      'Received: from dev ([127.0.0.1])\r\n\tby relay.test (smtp-graph-relay) with ESMTP id 0MWXQ0000000000ABCD;\r\n\tThu, 26 Nov 2026 15:00:00 +0000\r\n' +
        'Subject: hi\r\nDate: Thu, 26 Nov 2026 15:00:00 +0000\r\nMessage-ID: <0MWXQ0000000000ABCD@relay.test>\r\nBcc: a@x.example\r\n',
    );
    expect(result.messageId).toBe('<0MWXQ0000000000ABCD@relay.test>');
  });

  it('names the recipient in the Received field only when it is the only one and a To/Cc field shows it', () => {
    const firstLines = (header: string, rcpts: string[]) => rewriteHeader(block(header), rcpts, trace).header.toString().split(';')[0];
    expect(firstLines('To: A@x.example\r\n', ['a@x.example'])).toMatch(/\r\n\tfor <a@x\.example>$/);
    expect(firstLines('To: b@x.example\r\n', ['a@x.example'])).not.toMatch(/for </);
    expect(firstLines('To: a@x.example\r\n', ['a@x.example', 'c@x.example'])).not.toMatch(/for </);
  });

  it('keeps an existing Date and Message-ID untouched', () => {
    const result = rewriteHeader(block('Date: Mon, 1 Jan 2024 00:00:00 +0100\r\nMessage-Id: <x@y>\r\nTo: a@x.example\r\n'), ['a@x.example'], trace);
    expect(result.header.toString().match(/^Date:/gim)).toHaveLength(1);
    expect(result.header.toString().match(/^Message-Id:/gim)).toHaveLength(1);
    expect(result.messageId).toBe('<x@y>');
    expect(result.bcc).toEqual([]);
  });

  it('puts only envelope recipients missing from To/Cc into one Bcc, dropping a sender Bcc', () => {
    const result = rewriteHeader(block('To: A@x.example\r\nCc: c@x.example\r\nBcc: b@x.example, stranger@x.example\r\n'), ['a@x.example', 'b@x.example', 'c@x.example', 'd@x.example'], trace);
    expect(result.bcc).toEqual(['b@x.example', 'd@x.example']);
    expect(result.header.toString()).not.toContain('stranger');
    expect(result.header.toString().match(/^Bcc:/gim)).toHaveLength(1);
  });

  it('reports To/Cc addresses that are not envelope recipients', () => {
    expect(rewriteHeader(block('To: a@x.example, b@x.example\r\n'), ['a@x.example'], trace).headerOnly).toEqual(['b@x.example']);
  });

  it('neutralises control characters in the client-supplied HELO name', () => {
    const result = rewriteHeader([], ['a@x.example'], { ...trace, heloName: 'evil\r\nBcc: victim@x.example' });
    expect(result.header.toString().split('\r\n')[0]).toBe('Received: from evil??Bcc:?victim@x.example ([127.0.0.1])');
  });

  it('folds a long Bcc one address per line', () => {
    expect(bccField(['a@x', 'b@x', 'c@x'])).toBe('Bcc: a@x,\r\n b@x,\r\n c@x\r\n');
  });

  it('formats RFC 5322 dates in UTC', () => {
    expect(formatRfc5322Date(Date.parse('2026-01-05T03:04:05Z'))).toBe('Mon, 05 Jan 2026 03:04:05 +0000');
  });
});
