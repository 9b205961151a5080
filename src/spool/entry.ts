/**
 * The on-disk envelope/state record (queue/ID.json beside queue/ID.eml). The disk is the truth:
 * everything the scheduler knows is rebuilt from these records at start.
 */
import { z } from 'zod';

export const attemptErrorSchema = z.object({
  at: z.number(),
  /** transient: retried with backoff; operator: retried, but a person must fix config/permissions; permanent: failed. */
  kind: z.enum(['transient', 'operator', 'permanent']),
  message: z.string(),
  status: z.number().optional(),
  code: z.string().optional(),
  requestId: z.string().optional(),
});

export const spoolEntrySchema = z.object({
  version: z.literal(1),
  id: z.string().regex(/^[0-9A-Z]{19}$/),
  receivedAt: z.number(),
  envelope: z.object({
    mailFrom: z.string(),
    rcptTo: z.array(z.string()).min(1),
  }),
  client: z.object({
    address: z.string(),
    helo: z.string(),
    authUser: z.string().optional(),
  }),
  size: z.number().int().nonnegative(),
  mailbox: z.string().min(1),
  /** Which tenant/app sends ("tenantId|clientId" of a route's own graph settings); absent: graph. */
  graphProfile: z.string().optional(),
  messageId: z.string().optional(),
  attempts: z.number().int().nonnegative(),
  nextAttemptAt: z.number(),
  held: z.boolean(),
  lastError: attemptErrorSchema.optional(),
  failedAt: z.number().optional(),
  failReason: z.string().optional(),
  /** Set when a failed message was put back into the queue by an operator. */
  requeuedAt: z.number().optional(),
});

export type SpoolEntry = z.infer<typeof spoolEntrySchema>;
export type AttemptError = z.infer<typeof attemptErrorSchema>;
export type Envelope = SpoolEntry['envelope'];

export function serializeEntry(entry: SpoolEntry): string {
  return `${JSON.stringify(entry, null, 1)}\n`;
}

/** Parses a record; returns an Error describing the corruption instead of throwing. */
export function parseEntry(text: string): SpoolEntry | Error {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return new Error(`not JSON: ${(err as Error).message}`);
  }
  const result = spoolEntrySchema.safeParse(data);
  return result.success ? result.data : new Error(`invalid record: ${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
}
