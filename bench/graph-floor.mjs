// The floor of figure 8: a bare HTTPS client with no spool, no database and no other work, sending
// the bench's message to the emulator's sendMail over Graph's 4 slots for one mailbox (4 loops on
// the relay's HTTP stack, undici, with keep-alive). What it reaches is what this machine and this
// emulator allow at all; figure 8 is printed against it as well as against Graph's 40 msg/s.
// Usage: node bench/graph-floor.mjs GRAPH_URL TENANT CLIENT_ID SECRET MAILBOX COUNT BYTES (NODE_EXTRA_CA_CERTS: the emulator's CA)
// The message is the one the bench's senders send (run.mjs): BYTES of 78-byte lines under three headers.
// Prints "go <epoch ms>" after 8 warm-up requests (token, connections, compiled code), then sends COUNT more.
import { Agent, request } from 'undici';

const [url, tenant, clientId, secret, mailbox, count, bytes] = process.argv.slice(2);
const SLOTS = 4;
const dispatcher = new Agent();
const form = new URLSearchParams({ client_id: clientId, client_secret: secret, grant_type: 'client_credentials', scope: 'https://graph.microsoft.com/.default' });
const tokenResponse = await request(`${url}/${tenant}/oauth2/v2.0/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), dispatcher });
const { access_token: token } = await tokenResponse.body.json();
const line = `${'x'.repeat(76)}\r\n`;
const header = 'From: bench@bench.example\r\nTo: rcpt@bench.example\r\nSubject: bench\r\n\r\n';
const mime = Buffer.from(header + line.repeat(Math.ceil((Number(bytes) - header.length) / line.length)));

async function send(left) {
  while (left.n > 0) {
    left.n -= 1;
    const res = await request(`${url}/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: mime.toString('base64'), dispatcher });
    await res.body.dump();
    if (res.statusCode !== 202) throw new Error(`sendMail answered ${res.statusCode}`);
  }
}

const warm = { n: 8 };
await Promise.all(Array.from({ length: SLOTS }, () => send(warm)));
process.stdout.write(`go ${Date.now()}\n`);
const run = { n: Number(count) };
await Promise.all(Array.from({ length: SLOTS }, () => send(run)));
await dispatcher.close();
