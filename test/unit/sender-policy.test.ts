/** Header From/Sender against allowedSenders and fromPolicy: reject (src/smtp/sender-policy.ts). */
import { describe, expect, it } from 'vitest';
import { parseHeaderBlock } from '../../src/mime/header-block.js';
import { headerSenderRefusal } from '../../src/smtp/sender-policy.js';
import type { RouteChoice } from '../../src/smtp/routing.js';

const fields = (text: string) => parseHeaderBlock(Buffer.from(text.replace(/\n/g, '\r\n')));
const keep: RouteChoice = { mailbox: 'relay@contoso.example', fromPolicy: 'keep', routeIndex: null };
const reject: RouteChoice = { mailbox: 'strict@contoso.example', fromPolicy: 'reject', routeIndex: 0 };
const allowed = ['alerts@branch1.example', '*@scans.contoso.example'];

describe('header sender policy', () => {
  it('lets through From and Sender addresses the user may send as', () => {
    expect(headerSenderRefusal(fields('From: "Alerts" <ALERTS@branch1.example>\nSender: copier@scans.contoso.example\n'), keep, allowed)).toBeNull();
  });

  it('checks every address of every From field and the Sender field', () => {
    expect(headerSenderRefusal(fields('From: alerts@branch1.example, ceo@contoso.example\n'), keep, allowed)?.message).toMatch(/^5\.7\.1 From <ceo@contoso\.example> is not allowed/);
    expect(headerSenderRefusal(fields('From: alerts@branch1.example\nFrom: ceo@contoso.example\n'), keep, allowed)?.responseCode).toBe(550);
    expect(headerSenderRefusal(fields('From: alerts@branch1.example\nSender: ceo@contoso.example\n'), keep, allowed)?.message).toMatch(/^5\.7\.1 Sender <ceo@contoso\.example>/);
  });

  it('refuses a From field in which no address can be found when a policy applies', () => {
    expect(headerSenderRefusal(fields('From: undisclosed\n'), keep, allowed)?.responseCode).toBe(550);
    expect(headerSenderRefusal(fields('From: undisclosed\n'), keep)).toBeNull();
  });

  it('under fromPolicy reject, every From and Sender address must be the mailbox, and a From must be there', () => {
    expect(headerSenderRefusal(fields('From: Strict <strict@contoso.example>\n'), reject)).toBeNull();
    expect(headerSenderRefusal(fields('From: strict@contoso.example, boss@contoso.example\n'), reject)?.message).toMatch(/From <boss@contoso\.example>/);
    expect(headerSenderRefusal(fields('From: strict@contoso.example\nSender: boss@contoso.example\n'), reject)?.message).toMatch(/Sender <boss@contoso\.example>/);
    expect(headerSenderRefusal(fields('Subject: no from\n'), reject)?.responseCode).toBe(550);
  });
});
