/**
 * The console's "Send a test message": handed to the relay's own SMTP listener, as a device would,
 * so it takes the whole path (intake, spool, scheduler, Graph) and shows up in the queue under the
 * queue ID the 250 reply names ("Ok: queued as ID", smtp/server.ts).
 */

export async function sendTestMessage(smtp: { host: string; port: number }, from: string, to: string): Promise<{ queueId: string } | { error: string }> {
  // A wildcard listener is reached on loopback.
  const host = smtp.host === '0.0.0.0' || smtp.host === '::' ? '127.0.0.1' : smtp.host;
  // Loaded on first use: nodemailer is ~10 MB of a relay's idle RSS that only this button needs.
  const { default: nodemailer } = await import('nodemailer');
  const transport = nodemailer.createTransport({ host, port: smtp.port, secure: false, ignoreTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 });
  try {
    const info = await transport.sendMail({
      from,
      to,
      subject: 'smtp-graph-relay console test',
      text: `This message was sent from the smtp-graph-relay console at ${new Date().toISOString()}. Sending works.\r\n`,
    });
    const queueId = /queued as ([0-9A-Z]+)/.exec(info.response)?.[1];
    return queueId ? { queueId } : { error: `the relay answered "${info.response}" without a queue ID` };
  } catch (err) {
    const e = err as Error & { response?: string };
    return { error: `the relay's SMTP listener refused the test message: ${e.response ?? e.message} (smtp.auth.required or smtp.allowedClients may exclude the relay itself; use "smtp-graph-relay check --send-to" instead)` };
  } finally {
    transport.close();
  }
}
