/**
 * A minimal HTTP CONNECT proxy on loopback that records every tunnel: target, Proxy-Authorization,
 * and the local port of its upstream socket (so a test can match each connection the emulator
 * accepted to a tunnel through this proxy).
 */
import net from 'node:net';

export interface ConnectProxy {
  url: (credentials?: string) => string;
  tunnels: Array<{ target: string; authorization: string | undefined; upstreamLocalPort: number | undefined }>;
  close(): Promise<void>;
}

export async function startConnectProxy(requiredAuthorization?: string): Promise<ConnectProxy> {
  const tunnels: ConnectProxy['tunnels'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      client.off('data', onData);
      const lines = head.subarray(0, end).toString('latin1').split('\r\n');
      const [method, target] = (lines[0] ?? '').split(' ');
      const authorization = lines.find((l) => /^proxy-authorization:/i.test(l))?.replace(/^[^:]+:\s*/, '');
      if (method !== 'CONNECT' || !target) return void client.end('HTTP/1.1 405 Method Not Allowed\r\n\r\n');
      if (requiredAuthorization && authorization !== requiredAuthorization) return void client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n');
      const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
      const upstream = net.connect(port, host, () => {
        tunnels.push({ target, authorization, upstreamLocalPort: upstream.localPort });
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        const rest = head.subarray(end + 4);
        if (rest.length) upstream.write(rest);
        client.pipe(upstream).pipe(client);
      });
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: (credentials) => `http://${credentials ? `${credentials}@` : ''}127.0.0.1:${port}`,
    tunnels,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
