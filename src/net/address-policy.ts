/**
 * Client-address decisions: loopback, CIDR allowlists (node's BlockList does the matching for IPv4,
 * IPv6 and IPv4-mapped IPv6), and which clients may skip the early-talker delay.
 */
import net from 'node:net';

export function normalizeAddress(address: string): string {
  return address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}

export function isLoopback(address: string): boolean {
  const plain = normalizeAddress(address);
  if (net.isIPv4(plain)) return plain.startsWith('127.');
  return plain === '::1';
}

/** A listen host is loopback-only for 127.0.0.0/8, ::1 and "localhost"; 0.0.0.0 / :: are not. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
}

export function parseCidr(value: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address = '', prefixText] = value.split('/');
  const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null;
  if (!family) return null;
  const max = family === 'ipv4' ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return null;
  return { address, prefix, family };
}

export class ClientAllowlist {
  private readonly list = new net.BlockList();

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (parsed) this.list.addSubnet(parsed.address, parsed.prefix, parsed.family);
    }
  }

  allows(address: string): boolean {
    const plain = normalizeAddress(address);
    return this.list.check(plain, net.isIPv4(plain) ? 'ipv4' : 'ipv6');
  }
}

/** "*@contoso.example" or an exact address, case-insensitive. */
export function senderMatches(pattern: string, address: string): boolean {
  const p = pattern.toLowerCase();
  const a = address.toLowerCase();
  if (p.startsWith('*@')) return a.endsWith(p.slice(1));
  return p === a;
}
