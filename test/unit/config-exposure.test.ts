/** The open-relay and admin-exposure rules on the effective configuration (file + overrides). */
import { describe, expect, it } from 'vitest';
import { openRelayProblem, smtpListeners } from '../../src/config/exposure.js';
import { ConfigError, validateConfig } from '../../src/config/load.js';
import { applyOverrides } from '../../src/config/overrides.js';

const graph = { tenantId: 't', clientId: 'c', auth: { method: 'clientSecret', clientSecret: 's' }, mailbox: 'relay@contoso.example' };

function problems(raw: Record<string, unknown>, overrides = {}): string[] {
  try {
    validateConfig(raw, {}, 'relay.yaml', overrides);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return [err.source, ...err.problems.map((p) => `${p.path}: ${p.message}`)];
    throw err;
  }
}

describe('open-relay guard', () => {
  it('judges --listen, not only the file', () => {
    expect(problems({ graph })).toEqual([]);
    const found = problems({ graph }, { listen: '0.0.0.0:2526' });
    expect(found[0]).toBe('relay.yaml (with --listen 0.0.0.0:2526)');
    expect(found[1]).toMatch(/^smtp\.listen: listening on 0\.0\.0\.0:2526 \(not loopback\).*open relay/);
    expect(problems({ graph, smtp: { allowedClients: ['10.0.0.0/8'] } }, { listen: '0.0.0.0:2526' })).toEqual([]);
  });

  it('counts implicit-TLS listeners as well as STARTTLS ones', () => {
    const tls = { certFile: '/c.pem', keyFile: '/k.pem' };
    expect(problems({ graph, smtp: { tls: { ...tls, implicitListen: ['0.0.0.0:465'] } } }).join('\n')).toContain('listening on 0.0.0.0:465');
    expect(problems({ graph, smtp: { tls } }, { listen: '[::]:587' }).join('\n')).toContain('listening on [::]:587');
  });

  it('checks a new policy against the listeners already bound', () => {
    const bound = smtpListeners({ listen: ['127.0.0.1:25'], tls: { implicitListen: ['0.0.0.0:465'] } });
    expect(openRelayProblem(bound, { auth: { required: false } })).toContain('0.0.0.0:465');
    expect(openRelayProblem(bound, { allowedClients: ['10.0.0.0/8'], auth: { required: false } })).toBeNull();
    expect(openRelayProblem(bound, { auth: { required: true } })).toBeNull();
    expect(openRelayProblem(['127.0.0.1:25', '[::1]:25', 'localhost:25'], { auth: { required: false } })).toBeNull();
  });

  it('overrides replace one key and leave a malformed section for validation to report', () => {
    expect(applyOverrides({ smtp: { maxConnections: 5 } }, { listen: '127.0.0.1:1' })).toEqual({ smtp: { maxConnections: 5, listen: ['127.0.0.1:1'] } });
    expect(applyOverrides({ admin: { token: 'x' } }, { adminListen: false })).toEqual({ admin: { token: 'x', listen: false } });
    expect(applyOverrides({ smtp: ['not', 'a', 'map'] }, { listen: '127.0.0.1:1' })).toEqual({ smtp: ['not', 'a', 'map'] });
  });
});

describe('admin exposure', () => {
  it('a non-loopback admin.listen without admin.token is a configuration error naming the fix', () => {
    const found = problems({ graph, admin: { listen: '0.0.0.0:9925' } }).join('\n');
    expect(found).toContain('admin.listen: admin.listen 0.0.0.0:9925 is not loopback and admin.token is not set');
    expect(found).toContain('admin.token: "${ADMIN_TOKEN}"');
    expect(problems({ graph }, { adminListen: '0.0.0.0:9925' }).join('\n')).toContain('admin.token is not set');
    expect(problems({ graph, admin: { listen: '0.0.0.0:9925', token: 'x'.repeat(32) } })).toEqual([]);
    expect(problems({ graph, admin: { listen: '127.0.0.1:9925' } })).toEqual([]);
  });

  it('a short token is refused with the rule, never the value; the token is a secret', () => {
    const found = problems({ graph, admin: { token: 'short-tok' } }).join('\n');
    expect(found).toContain('admin.token: admin.token needs at least 16 characters');
    expect(found).not.toContain('short-tok');
  });
});
