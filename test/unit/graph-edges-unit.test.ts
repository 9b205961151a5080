/**
 * The pure and near-pure pieces behind issue 12's Graph edges: the request gate as the first byte
 * leaves (a real TLS server on loopback), the upload budget, the thresholds, and NextExpectedRanges.
 */
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestPki } from '../../src/emulator/test-pki.js';
import { createHttpTransport, RequestHeldError } from '../../src/graph/http-transport.js';
import { MAX_REQUEST_BYTES, needsUploadSession, nextExpectedOffset, SINGLE_REQUEST_LIMIT, UPLOAD_SESSION_FROM } from '../../src/graph/large-message.js';
import { UploadBudget } from '../../src/delivery/upload-budget.js';
import { isHeld } from '../../src/graph/graph-call.js';
import { HttpGraphMailer } from '../../src/graph/mailer.js';
import { measuredMailer } from '../../src/ops/measured-mailer.js';
import { RelayMetrics } from '../../src/ops/metrics.js';

describe('request gate', () => {
  it('asks once the connection is up and holds the request back before any byte of it is sent', async () => {
    const pki = await createTestPki('gate test CA');
    const { certPem, keyPem } = await pki.issueServerCertificate(['127.0.0.1']);
    const events: string[] = [];
    const server = createServer({ cert: certPem, key: keyPem }, (req, res) => {
      events.push('request');
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    server.on('connection', () => events.push('connected'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/users/x/sendMail`;
    const http = createHttpTransport({ timeoutMs: 5000, extraCaPem: [pki.caPem] });
    try {
      // A Retry-After that arrives while the connection is being set up (TLS handshake): asked after it.
      const held = http.request(url, { method: 'POST', body: 'mail', mayStart: () => (events.push('asked'), false) });
      await expect(held).rejects.toBeInstanceOf(RequestHeldError);
      expect(events).toEqual(['connected', 'asked']);
      const sent = await http.request(url, { method: 'POST', body: 'mail', mayStart: () => true });
      expect(sent.status).toBe(200);
      expect(events.filter((e) => e === 'request')).toHaveLength(1);
    } finally {
      await http.close();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('request gate through the relay\'s metered mailer', () => {
  // The relay wraps each tenant's mailer for its metrics; the wrapper once dropped sendMime's gate,
  // so a small message could leave after a Retry-After for its mailbox was known.
  it('asks the gate before a small message\'s request leaves, and sends nothing when it says wait', async () => {
    const pki = await createTestPki('metered gate CA');
    const { certPem, keyPem } = await pki.issueServerCertificate(['127.0.0.1']);
    const requests: string[] = [];
    const server = createServer({ cert: certPem, key: keyPem }, (req, res) => {
      requests.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => {
        res.statusCode = 202;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const http = createHttpTransport({ timeoutMs: 5000, extraCaPem: [pki.caPem] });
    const metrics = new RelayMetrics(() => ({ depth: 0, oldestAgeSeconds: 0, held: 0, inFlightByMailbox: new Map() }), async () => 0);
    const mailer = measuredMailer(metrics, () => new HttpGraphMailer(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, http));
    try {
      let asked = 0;
      const held = await mailer.sendMime('relay@contoso.example', Buffer.from('Subject: x\r\n\r\nx\r\n'), 'token', () => (asked++, false));
      expect(asked).toBeGreaterThan(0);
      expect(isHeld(held)).toBe(true); // held before sending: not an attempt
      expect(requests).toEqual([]);
      const sent = await mailer.sendMime('relay@contoso.example', Buffer.from('Subject: x\r\n\r\nx\r\n'), 'token', () => true);
      expect(sent.kind === 'http' && sent.status).toBe(202);
      expect(requests).toEqual(['POST /v1.0/users/relay%40contoso.example/sendMail']);
    } finally {
      await http.close();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('upload budget: 150 MB per 5 minutes per app and mailbox', () => {
  it('lets a message start only when the window has room, then when the oldest uploads leave it', () => {
    let now = 1_000_000;
    const budget = new UploadBudget(() => now, 150_000_000, 300_000);
    expect(budget.availableAt(60_000_000)).toBe(now);
    budget.record(60_000_000);
    now += 60_000;
    budget.record(60_000_000);
    // 120 MB used: 40 MB more waits until the first 60 MB leave the window.
    expect(budget.availableAt(40_000_000)).toBe(1_000_000 + 300_000);
    expect(budget.availableAt(30_000_000)).toBe(now);
    // More than the whole budget goes once the window is empty.
    expect(budget.availableAt(200_000_000)).toBe(1_060_000 + 300_000);
    now = 1_060_000 + 300_000;
    expect(budget.availableAt(200_000_000)).toBe(now);
  });
});

describe('thresholds from the encoded request size', () => {
  it('keeps a margin under 4 MiB for raw MIME and for JSON attachments, and uses sessions from 3 MB', () => {
    expect(Math.ceil(SINGLE_REQUEST_LIMIT / 3) * 4).toBeLessThanOrEqual(MAX_REQUEST_BYTES - 4096);
    expect(Math.ceil((SINGLE_REQUEST_LIMIT + 3) / 3) * 4).toBeGreaterThan(MAX_REQUEST_BYTES - 4096);
    expect(needsUploadSession(UPLOAD_SESSION_FROM - 1, 4_000_000)).toBe(false);
    expect(needsUploadSession(UPLOAD_SESSION_FROM, 4_000_000)).toBe(true);
    // Under 3 MB decoded but a long name pushes the JSON over the limit: a session (never below 2 MiB then).
    expect(needsUploadSession(2_999_000, MAX_REQUEST_BYTES - 100)).toBe(true);
  });

  it('reads NextExpectedRanges in either case and form', () => {
    expect(nextExpectedOffset({ NextExpectedRanges: ['2097152'] })).toBe(2_097_152);
    expect(nextExpectedOffset({ nextExpectedRanges: ['3276800-'] })).toBe(3_276_800);
    expect(nextExpectedOffset({})).toBeNull();
  });
});
