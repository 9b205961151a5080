// A no-op smtp-server with the relay's own options (greeting delay skipped for loopback, no reverse
// DNS, the relay's smtp-server adjustments), run as its own process like the relay: the ceiling of
// any relay built on smtp-server, reported beside figures 1 and 2. Usage: node bench/noop-smtp.mjs PORT
import { SMTPServer } from 'smtp-server';
import { applySmtpServerAdjustments } from '../dist/smtp/smtp-server-adapter.js';

applySmtpServerAdjustments();
const server = new SMTPServer({
  disabledCommands: ['AUTH', 'STARTTLS'],
  logger: false,
  disableReverseLookup: true,
  skipGreetingDelay: () => true,
  size: 35 * 1024 * 1024,
  onData(stream, _session, callback) {
    stream.resume();
    stream.on('end', () => callback(null, 'Ok: discarded'));
  },
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write('listening\n'));
