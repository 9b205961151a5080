/**
 * A raw SMTP client over a real socket, for conversations nodemailer will not have: misbehaving
 * clients, pipelining, exact reply checks. Replies are parsed per RFC 5321 §4.2 (multi-line aware).
 */
import net from 'node:net';

export interface SmtpReplyLine {
  code: number;
  text: string;
}

export class RawSmtpClient {
  private buffer = '';
  private readonly replies: SmtpReplyLine[] = [];
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => {
      this.buffer += data;
      let index: number;
      let current: string[] = [];
      while ((index = this.buffer.indexOf('\r\n')) !== -1) {
        const line = this.buffer.slice(0, index);
        this.buffer = this.buffer.slice(index + 2);
        current.push(line);
        if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
          this.replies.push({ code: Number(line.slice(0, 3)), text: current.map((l) => l.slice(4)).join('\n') });
          current = [];
        }
      }
      if (current.length > 0) this.buffer = `${current.join('\r\n')}\r\n${this.buffer}`;
      this.notify();
    });
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
    socket.on('error', () => undefined);
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawSmtpClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) }, () => resolve(new RawSmtpClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Waits for the next reply (greeting first). */
  async reply(timeoutMs = 10_000): Promise<SmtpReplyLine> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('connection closed before a reply');
      if (Date.now() > deadline) throw new Error('timed out waiting for an SMTP reply');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.replies.shift() as SmtpReplyLine;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string): Promise<SmtpReplyLine> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** Sends a whole transaction; returns the reply to the final dot. */
  async send(from: string, to: string[], message: string | Buffer): Promise<SmtpReplyLine> {
    const mail = await this.command(`MAIL FROM:<${from}>`);
    if (mail.code !== 250) return mail;
    for (const rcpt of to) {
      const r = await this.command(`RCPT TO:<${rcpt}>`);
      if (r.code !== 250) return r;
    }
    const data = await this.command('DATA');
    if (data.code !== 354) return data;
    const body = Buffer.isBuffer(message) ? message : Buffer.from(message);
    // Dot-stuffing (RFC 5321 §4.5.2).
    const stuffed = Buffer.from(body.toString('latin1').replace(/(^|\r\n)\./g, '$1..'), 'latin1');
    this.write(Buffer.concat([stuffed, Buffer.from(stuffed.subarray(-2).toString() === '\r\n' ? '.\r\n' : '\r\n.\r\n')]));
    return this.reply();
  }

  async quit(): Promise<void> {
    if (!this.closed) {
      this.write('QUIT\r\n');
      await this.reply().catch(() => undefined);
    }
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
