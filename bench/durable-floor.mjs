// The floor of durable intake in Node on this machine, reported beside figures 1 and 2: a bare SMTP
// responder (no policy, no header work, no dot-unstuffing, no queue, no logging) that appends each
// message to one file and answers 250 only after a shared fdatasync (group commit, as the relay's
// journal does). No relay that keeps "250 means on disk" can be cheaper per message than this.
// A measurement tool, not a server: it trusts its client. Usage: node bench/durable-floor.mjs PORT FILE
import fs from 'node:fs';
import net from 'node:net';

const [port, file] = [Number(process.argv[2]), process.argv[3]];
const fd = fs.openSync(file, 'w', 0o600);
let pending = [];
let flushing = false;

// Everyone who finished DATA while a flush ran shares the next one.
function flush() {
  if (flushing || pending.length === 0) return;
  flushing = true;
  const batch = pending;
  pending = [];
  fs.writev(fd, batch.map((m) => m.data), (writeErr) => {
    fs.fdatasync(fd, (syncErr) => {
      const reply = writeErr || syncErr ? '451 4.3.0 not stored\r\n' : '250 2.0.0 stored\r\n';
      for (const m of batch) m.socket.write(reply);
      flushing = false;
      flush();
    });
  });
}

const END_OF_DATA = '\r\n.\r\n';

net
  .createServer((socket) => {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('error', () => undefined);
    socket.write('220 floor ESMTP\r\n');
    let buffer = '';
    let body = null; // the message so far, while in DATA
    socket.on('data', (chunk) => {
      buffer += chunk;
      let out = '';
      for (;;) {
        if (body !== null) {
          const end = buffer.indexOf(END_OF_DATA);
          if (end < 0) {
            // Keep the last bytes: the terminator may straddle two reads.
            const keep = Math.max(0, buffer.length - END_OF_DATA.length);
            body.push(buffer.slice(0, keep));
            buffer = buffer.slice(keep);
            break;
          }
          body.push(buffer.slice(0, end + 2));
          buffer = buffer.slice(end + END_OF_DATA.length);
          if (out) socket.write(out);
          out = '';
          // Without the CRLF put in front of it below (it belongs to the DATA line).
          pending.push({ socket, data: Buffer.from(body.join('').slice(2), 'latin1') });
          body = null;
          flush();
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol < 0) break;
        const verb = buffer.slice(0, 4).toUpperCase();
        buffer = buffer.slice(eol + 2);
        if (verb === 'EHLO') out += '250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n';
        else if (verb === 'DATA') {
          out += '354 go ahead\r\n';
          body = [];
          // The terminator's leading CRLF is the DATA line's own: an empty message ends at once.
          buffer = `\r\n${buffer}`;
        } else if (verb === 'QUIT') {
          socket.end(`${out}221 bye\r\n`);
          return;
        } else out += '250 ok\r\n';
      }
      if (out) socket.write(out);
    });
  })
  .listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
