/** Corporate egress: with graph.proxy set, every request to the authority and to Graph goes through it. */
import nodemailer from 'nodemailer';
import { afterAll, describe, expect, it } from 'vitest';
import { MAILBOX, startHarness, waitForDelivery, type Harness } from '../helpers/harness.js';
import { startConnectProxy, type ConnectProxy } from '../helpers/connect-proxy.js';

let h: Harness | undefined;
let proxy: ConnectProxy | undefined;
afterAll(async () => {
  await h?.close();
  await proxy?.close();
});

describe('HTTP proxy', () => {
  it('tunnels every token and Graph request through the proxy, with the credentials from the URL', async () => {
    const expectedAuth = `Basic ${Buffer.from('relay:pa$s word').toString('base64')}`;
    proxy = await startConnectProxy(expectedAuth);
    h = await startHarness({ config: { graph: { proxy: proxy.url('relay:pa%24s%20word') } } });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
    for (const id of ['proxy-1', 'proxy-2']) await transport.sendMail({ from: MAILBOX, to: 'ops@contoso.example', subject: id, text: 'x', headers: { 'X-Test-Id': id } });
    await waitForDelivery(h.emulator, 'proxy-1');
    await waitForDelivery(h.emulator, 'proxy-2');

    expect(proxy.tunnels.length).toBeGreaterThanOrEqual(1);
    for (const tunnel of proxy.tunnels) {
      expect(tunnel.target).toBe(new URL(h.emulator.url).host);
      expect(tunnel.authorization).toBe(expectedAuth);
    }
    // Every connection the emulator (authority + Graph) accepted came out of a proxy tunnel.
    const tunnelPorts = new Set(proxy.tunnels.map((t) => t.upstreamLocalPort));
    expect(h.emulator.connectionPorts.length).toBeGreaterThanOrEqual(1);
    for (const port of h.emulator.connectionPorts) expect(tunnelPorts.has(port)).toBe(true);
    expect(h.emulator.identity.grants.get('client_credentials')).toBe(1);
    // The proxy password never reaches the logs.
    expect(h.logs.text()).not.toContain('pa%24s');
  });
});
