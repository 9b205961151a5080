/**
 * Queues a delivery status notification for a message that just moved to failed/: built by dsn.ts,
 * spooled durably like any message (null sender, so it can never bounce itself), delivered through
 * Graph from the same mailbox with the same tenant/app.
 */
import { randomBytes } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
import type { Logger } from '../log.js';
import { readHeaderBlockFromFile } from '../mime/header-block.js';
import type { SpoolEntry } from '../spool/entry.js';
import { newQueueId } from '../spool/queue-id.js';
import type { Spool } from '../spool/spool.js';
import type { Clock } from '../util/clock.js';
import { buildDsn, isDeliveryReport } from './dsn.js';

export interface BounceDeps {
  spool: Spool;
  clock: Clock;
  logger: Logger;
  settings: () => { enabled: boolean; to?: string | undefined; hostname?: string | undefined };
  enqueue: (entry: SpoolEntry) => void;
}

export async function queueBounce(deps: BounceDeps, failedId: string, expired: boolean): Promise<void> {
  const { spool, clock, logger } = deps;
  const settings = deps.settings();
  try {
    const failed = await spool.get(failedId, 'failed');
    if (!settings.enabled || !failed || failed.envelope.mailFrom === '') return;
    const { header } = await spool.withMessageFile(failedId, 'failed', (file) => readHeaderBlockFromFile(file));
    if (isDeliveryReport(header)) return;
    const now = clock.now();
    const id = newQueueId(now);
    const to = settings.to ?? failed.envelope.mailFrom;
    const hostname = settings.hostname ?? osHostname();
    const messageId = `<${id}.dsn@${hostname}>`;
    // The boundary is unguessable: the original header block is quoted in the report as it came, so a
    // line in it cannot close a part the sender predicted. buildDsn throws (bounce.failed) when the
    // address to report to is not a mailbox, rather than write it into a header field.
    const mime = buildDsn({ failed, reason: failed.failReason ?? 'delivery failed', expired, originalHeader: header, reportingHost: hostname, fromMailbox: failed.mailbox, to, now, boundary: `dsn-${id}-${randomBytes(9).toString('base64url')}`, messageId });
    const writer = await spool.beginMessage(id);
    try {
      await writer.write(mime);
      const entry = await writer.commit({
        id,
        receivedAt: now,
        envelope: { mailFrom: '', rcptTo: [to] },
        client: { address: '127.0.0.1', helo: 'smtp-graph-relay' },
        mailbox: failed.mailbox,
        ...(failed.graphProfile ? { graphProfile: failed.graphProfile } : {}),
        messageId,
      });
      logger.info({ event: 'bounce.queued', queueId: id, about: failedId, to, expired }, 'delivery status notification queued');
      deps.enqueue(entry);
    } catch (err) {
      await writer.abort();
      throw err;
    }
  } catch (err) {
    logger.error({ event: 'bounce.failed', about: failedId, err: (err as Error).message }, 'could not queue a delivery status notification');
  }
}
