/**
 * The admin request guard's decision (src/ops/admin-guard.ts), request by request. The real
 * listener is exercised in test/integration/admin-security.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { checkAdminRequest, parseHostHeader, tokenMatches, type AdminGuardPolicy, type AdminRequestFacts } from '../../src/ops/admin-guard.js';

const loopback: AdminGuardPolicy = { listenHost: '127.0.0.1' };
const TOKEN = 'a'.repeat(16) + 'secret-admin-token';

function req(partial: Partial<AdminRequestFacts> & { headers?: Record<string, string> }): AdminRequestFacts {
  return { method: 'GET', path: '/queue', localAddress: '127.0.0.1', ...partial, headers: { host: '127.0.0.1:9925', ...partial.headers } };
}
const status = (facts: AdminRequestFacts, policy: AdminGuardPolicy = loopback) => checkAdminRequest(facts, policy)?.status ?? 200;

describe('admin guard: Host', () => {
  it('accepts loopback names and addresses and the host of admin.listen', () => {
    for (const host of ['127.0.0.1:9925', 'localhost:9925', 'LOCALHOST', '[::1]:9925', '127.0.0.2', '2130706433:9925']) expect(status(req({ headers: { host } })), host).toBe(200);
    expect(status(req({ headers: { host: 'relay01.corp:9925' } }), { listenHost: 'relay01.corp', token: TOKEN })).toBe(401);
    expect(status(req({ headers: { host: 'RELAY01.corp:9925', authorization: `Bearer ${TOKEN}` } }), { listenHost: 'relay01.corp', token: TOKEN })).toBe(200);
  });

  it('refuses a rebinding name, a missing Host and a Host with user info (421)', () => {
    for (const host of ['attacker.example', 'attacker.example:9925', '127.0.0.1.attacker.example', 'evil@127.0.0.1', '', 'localhost.attacker.example']) {
      expect(status(req({ headers: { host } })), host).toBe(421);
    }
    expect(status({ method: 'GET', path: '/queue', headers: {} })).toBe(421);
  });

  it('on a wildcard listener, accepts the address the connection arrived on and nothing else', () => {
    const wildcard = { listenHost: '0.0.0.0', token: TOKEN };
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect(status(req({ headers: { host: '10.1.2.3:9925', ...auth }, localAddress: '::ffff:10.1.2.3' }), wildcard)).toBe(200);
    expect(status(req({ headers: { host: '10.1.2.4:9925', ...auth }, localAddress: '10.1.2.3' }), wildcard)).toBe(421);
    expect(status(req({ headers: { host: '0.0.0.0:9925', ...auth }, localAddress: '10.1.2.3' }), wildcard)).toBe(421);
    expect(status(req({ headers: { host: 'relay01:9925', ...auth }, localAddress: '10.1.2.3' }), wildcard)).toBe(421);
  });

  it('parses Host headers the way a browser writes them', () => {
    expect(parseHostHeader('[::1]:9925')).toEqual({ hostname: '::1', host: '[::1]:9925' });
    expect(parseHostHeader('Localhost.:80')).toEqual({ hostname: 'localhost', host: 'localhost.' });
    expect(parseHostHeader('a b')).toBeNull();
  });
});

describe('admin guard: state-changing requests', () => {
  const post = (headers: Record<string, string>) => req({ method: 'POST', path: '/queue/purge-failed', headers });

  it('need Content-Type: application/json (415 for the simple types a cross-site form can send)', () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) expect(status(post({ 'content-type': type })), type).toBe(415);
    expect(status(post({}))).toBe(415);
    expect(status(post({ 'content-type': 'application/json; charset=utf-8' }))).toBe(200);
    expect(status(req({ method: 'PUT', path: '/log-level', headers: { 'content-type': 'text/plain' } }))).toBe(415);
  });

  it('are refused when Origin or Sec-Fetch-Site names another origin (403)', () => {
    const json = { 'content-type': 'application/json' };
    expect(status(post({ ...json, origin: 'http://attacker.example' }))).toBe(403);
    expect(status(post({ ...json, origin: 'null' }))).toBe(403);
    expect(status(post({ ...json, origin: 'http://127.0.0.1:9926' }))).toBe(403);
    expect(status(post({ ...json, 'sec-fetch-site': 'cross-site' }))).toBe(403);
    expect(status(post({ ...json, origin: 'http://127.0.0.1:9925', 'sec-fetch-site': 'same-origin' }))).toBe(200);
  });

  it('reads are not held to the state-changing rules', () => {
    expect(status(req({ headers: { origin: 'http://attacker.example' } }))).toBe(200);
  });
});

describe('admin guard: admin.token', () => {
  const policy = { listenHost: '127.0.0.1', token: TOKEN };
  it('is needed on every endpoint except /healthz', () => {
    for (const path of ['/queue', '/metrics', '/readyz', '/queue/x/show']) expect(status(req({ path }), policy), path).toBe(401);
    expect(status(req({ path: '/healthz' }), policy)).toBe(200);
    expect(status(req({ headers: { authorization: `Bearer ${TOKEN}x` } }), policy)).toBe(401);
    expect(status(req({ headers: { authorization: `Basic ${TOKEN}` } }), policy)).toBe(401);
    expect(status(req({ headers: { authorization: `bearer ${TOKEN}` } }), policy)).toBe(200);
    expect(checkAdminRequest(req({}), policy)?.headers?.['www-authenticate']).toMatch(/^Bearer /);
  });

  it('never echoes the token in a refusal', () => {
    const refusal = checkAdminRequest(req({ headers: { authorization: 'Bearer wrong-token-value' } }), policy);
    expect(JSON.stringify(refusal)).not.toContain(TOKEN);
    expect(JSON.stringify(refusal)).not.toContain('wrong-token-value');
  });

  it('compares whole tokens of any length', () => {
    expect(tokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(tokenMatches(TOKEN.slice(0, -1), TOKEN)).toBe(false);
    expect(tokenMatches('', TOKEN)).toBe(false);
  });
});
