/**
 * The streaming MIME structure scan behind the large-message path: leaf parts found by boundary
 * lookup at any depth, an outer boundary ending inner multiparts, a shadowed (reused) boundary,
 * and nesting beyond MAX_MULTIPART_DEPTH refused with a reason (issue 11, item 13).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_MULTIPART_DEPTH, MimeStructureError, scanLeafParts, type LeafPart } from '../../src/mime/mime-structure.js';
import { craftNestedMessage } from '../helpers/crafted-mime.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sgr-mime-structure-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function scan(mime: Buffer): Promise<{ leaves: LeafPart[]; body: (p: LeafPart) => string }> {
  const file = path.join(dir, `m-${Math.random().toString(36).slice(2)}.eml`);
  await writeFile(file, mime);
  const split = mime.indexOf('\r\n\r\n') + 4;
  const leaves = await scanLeafParts(file, mime.subarray(0, split), split);
  return { leaves, body: (p) => mime.subarray(p.bodyStart, p.bodyEnd).toString('latin1') };
}

const crlf = (text: string) => Buffer.from(text.replace(/\n/g, '\r\n'), 'latin1');

describe('MIME structure scan', () => {
  it('finds every leaf part, with an outer boundary ending an unclosed inner multipart and a reused boundary', async () => {
    const { leaves, body } = await scan(
      crlf(
        'Content-Type: multipart/mixed; boundary="outer"\n\n' +
          'preamble\n--outer\nContent-Type: multipart/alternative; boundary="inner"\n\n' +
          '--inner\nContent-Type: text/plain\n\nplain\n--innerX\n--inner\nContent-Type: text/html\n\n<p>html</p>\n' +
          // no "--inner--": the next outer delimiter ends it
          '--outer\nContent-Type: multipart/related; boundary="outer"\n\n' +
          // a nested multipart reusing its parent's boundary (RFC 2046 forbids it): the innermost wins
          '--outer\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="a.pdf"\n\nQUJD\n--outer--\n' +
          '--outer--\nepilogue\n',
      ),
    );
    expect(leaves.map((p) => [p.contentType, body(p)])).toEqual([
      ['text/plain', 'plain\r\n--innerX'],
      ['text/html', '<p>html</p>'],
      ['application/pdf', 'QUJD'],
    ]);
    expect(leaves[2]).toMatchObject({ transferEncoding: 'base64', disposition: 'attachment', filename: 'a.pdf' });
  });

  it(`follows ${MAX_MULTIPART_DEPTH} levels of nesting and refuses one more with a reason an operator can act on`, async () => {
    const deepest = await scan(craftNestedMessage({ depth: MAX_MULTIPART_DEPTH, totalBytes: 700_000, testId: 'deep', attachmentBytes: 3000 }).mime);
    expect(deepest.leaves.map((p) => p.contentType)).toEqual(['text/plain', 'application/octet-stream']);
    const tooDeep = scan(craftNestedMessage({ depth: MAX_MULTIPART_DEPTH + 1, totalBytes: 700_000, testId: 'deeper', attachmentBytes: 3000 }).mime);
    await expect(tooDeep).rejects.toThrow(MimeStructureError);
    await expect(tooDeep).rejects.toThrow(`nests multipart MIME parts more than ${MAX_MULTIPART_DEPTH} levels deep`);
  });
});
