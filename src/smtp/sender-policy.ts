/**
 * Who the recipients see as the sender, checked at DATA. Graph ignores the envelope: recipients see
 * the header From (and Sender, "on behalf of"), so a user limited by allowedSenders to
 * alerts@branch1.example could send with `From: ceo@...` - and pick another route by it - while
 * only MAIL FROM was checked. Every address of every From field and of the Sender field must pass
 * the user's allowedSenders and, under a route's fromPolicy: reject, be the route's mailbox.
 * Pure: the header fields and the policy in, a refusal (550 5.7.1 with the reason) or null out.
 */
import { addressesIn, type HeaderField } from '../mime/header-block.js';
import { senderMatches } from '../net/address-policy.js';
import { replies, type SmtpReply } from './replies.js';
import type { RouteChoice } from './routing.js';

interface HeaderSender {
  field: 'From' | 'Sender';
  /** Lower-cased; null for a field that names no address a parser could find (it cannot be checked). */
  address: string | null;
}

export function headerSenders(fields: readonly HeaderField[]): HeaderSender[] {
  return fields
    .filter((f) => f.name === 'from' || f.name === 'sender')
    .flatMap((f): HeaderSender[] => {
      const field = f.name === 'from' ? 'From' : 'Sender';
      const addresses = addressesIn(f.value);
      return addresses.length > 0 ? addresses.map((address) => ({ field, address })) : [{ field, address: null }];
    });
}

export function headerSenderRefusal(fields: readonly HeaderField[], route: RouteChoice, allowedSenders?: readonly string[]): SmtpReply | null {
  const senders = headerSenders(fields);
  if (allowedSenders) {
    const bad = senders.find((s) => s.address === null || !allowedSenders.some((p) => senderMatches(p, s.address as string)));
    if (bad) return replies.headerSenderNotAllowed(bad.field, bad.address ?? '');
  }
  if (route.fromPolicy === 'reject') {
    const mailbox = route.mailbox.toLowerCase();
    // No From at all is refused too: the policy is "From is the mailbox".
    const bad = senders.find((s) => s.address !== mailbox) ?? (senders.some((s) => s.field === 'From') ? undefined : { field: 'From' as const, address: '' });
    if (bad) return replies.fromNotAllowed(bad.field, bad.address ?? '', route.mailbox);
  }
  return null;
}
