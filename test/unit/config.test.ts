import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText, redactConfig } from '../../src/config/load.js';
import { parseDurationMs, parseHostPort, parseSizeBytes } from '../../src/config/units.js';

const minimal = `
graph:
  tenantId: "t"
  clientId: "c"
  auth:
    method: clientSecret
    clientSecret: "\${GRAPH_CLIENT_SECRET}"
  mailbox: "relay@contoso.example"
`;

function problems(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfigText(text, env, 'relay.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

describe('configuration', () => {
  it('fills every default from the schema and freezes the result', () => {
    const config = parseConfigText(minimal, { GRAPH_CLIENT_SECRET: 's3cret' });
    expect(config.smtp.listen).toEqual(['127.0.0.1:2525']);
    expect(config.smtp.maxMessageSize).toBe(35_000_000);
    expect(config.graph.authorityHost).toBe('https://login.microsoftonline.com');
    expect(config.graph.endpoint).toBe('https://graph.microsoft.com');
    expect(config.spool.dir).toBe('/var/spool/smtp-graph-relay');
    expect(config.delivery).toEqual({ maxInFlightPerMailbox: 4, retry: { minDelay: 60_000, maxDelay: 3_600_000 }, maxQueueLifetime: 5 * 86_400_000, headerOnlyRecipients: 'skip', perMailbox: { messagesPerMinute: 30, recipientsPerDay: 10_000 } });
    expect(Object.isFrozen(config.graph.auth)).toBe(true);
    expect(config.graph.auth).toEqual({ method: 'clientSecret', clientSecret: 's3cret' });
  });

  it('reports every problem at once, each with its path', () => {
    const found = problems(`
smtp:
  listen: "nonsense"
  maxMesageSize: 5
graph:
  clientId: ""
  auth: { method: magic }
spool: { dir: "/x" }
extra: 1
`);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^smtp\.listen: expected "host:port"/),
        expect.stringMatching(/^smtp\.maxMesageSize: unknown key/),
        expect.stringMatching(/^graph\.tenantId: required/),
        expect.stringMatching(/^graph\.clientId: /),
        expect.stringMatching(/^graph\.auth\.method: .*one of clientSecret, certificate, password, deviceCode, federated/),
        expect.stringMatching(/^extra: unknown key/),
      ]),
    );
  });

  it('names a missing ${VAR} and never echoes secret values', () => {
    const found = problems(minimal, {});
    expect(found).toEqual([expect.stringContaining('environment variable GRAPH_CLIENT_SECRET is not set')]);
    const bad = problems(minimal.replace('"${GRAPH_CLIENT_SECRET}"', '12345'), {});
    expect(bad.join('\n')).not.toContain('12345');
    expect(bad).toEqual([expect.stringMatching(/^graph\.auth\.clientSecret: invalid value \(not shown: secret\)/)]);
  });

  it('reports YAML syntax errors with a line number', () => {
    expect(problems('smtp:\n  listen: [unclosed\n')[0]).toMatch(/^line \d+: YAML syntax/);
  });

  it('refuses an http:// or versioned Graph endpoint', () => {
    expect(problems(`${minimal}  endpoint: "http://graph.microsoft.com"\n`, { GRAPH_CLIENT_SECRET: 'x' })).toEqual([expect.stringMatching(/^graph\.endpoint: expected an https:\/\/ URL with no path/)]);
    expect(problems(`${minimal}  endpoint: "https://graph.microsoft.com/v1.0"\n`, { GRAPH_CLIENT_SECRET: 'x' })).toHaveLength(1);
  });

  it('redacts secrets for --print-config', () => {
    const config = parseConfigText(minimal, { GRAPH_CLIENT_SECRET: 'topsecret' });
    const printed = JSON.stringify(redactConfig(config));
    expect(printed).not.toContain('topsecret');
    expect(printed).toContain('"clientSecret":"[redacted]"');
  });

  it('treats $$ as a literal dollar sign', () => {
    const config = parseConfigText(minimal.replace('"${GRAPH_CLIENT_SECRET}"', '"a$$b"'), {});
    expect(config.graph.auth).toMatchObject({ clientSecret: 'a$b' });
  });
});

describe('units', () => {
  it.each([
    ['90s', 90_000],
    ['250ms', 250],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['5d', 432_000_000],
    [30, 30_000],
    ['1.5s', 1500],
  ] as const)('parses duration %s', (input, ms) => expect(parseDurationMs(input)).toBe(ms));

  it.each([['5 parsecs'], ['-1s'], ['']])('rejects duration %s', (input) => expect(parseDurationMs(input)).toBeNull());

  it.each([
    ['35MB', 35_000_000],
    ['3MiB', 3 * 1024 * 1024],
    ['512KB', 512_000],
    [1000, 1000],
  ] as const)('parses size %s', (input, bytes) => expect(parseSizeBytes(input)).toBe(bytes));

  it('splits IPv4 and bracketed IPv6 listen addresses', () => {
    expect(parseHostPort('127.0.0.1:2525')).toEqual({ host: '127.0.0.1', port: 2525 });
    expect(parseHostPort('[::1]:25')).toEqual({ host: '::1', port: 25 });
    expect(parseHostPort('::1:25')).toBeNull();
    expect(parseHostPort('host:99999')).toBeNull();
  });
});

describe('clouds and proxy', () => {
  it.each([
    ['global', 'https://login.microsoftonline.com', 'https://graph.microsoft.com'],
    ['usgov', 'https://login.microsoftonline.us', 'https://graph.microsoft.us'],
    ['usgovdod', 'https://login.microsoftonline.us', 'https://dod-graph.microsoft.us'],
    ['china', 'https://login.chinacloudapi.cn', 'https://microsoftgraph.chinacloudapi.cn'],
  ])('the %s preset sets authority and Graph host together', (cloud, authorityHost, endpoint) => {
    const config = parseConfigText(`${minimal}  cloud: ${cloud}\n`, { GRAPH_CLIENT_SECRET: 'x' });
    expect(config.graph).toMatchObject({ authorityHost, endpoint });
  });

  it('lets explicit authorityHost/endpoint override the preset', () => {
    const config = parseConfigText(`${minimal}  cloud: china\n  endpoint: "https://graph.private.example"\n`, { GRAPH_CLIENT_SECRET: 'x' });
    expect(config.graph).toMatchObject({ authorityHost: 'https://login.chinacloudapi.cn', endpoint: 'https://graph.private.example' });
  });

  it('redacts the proxy password in --print-config', () => {
    const config = parseConfigText(`${minimal}  proxy: "http://relay:hunter2@proxy.corp:3128"\n`, { GRAPH_CLIENT_SECRET: 'x' });
    const printed = JSON.stringify(redactConfig(config));
    expect(printed).not.toContain('hunter2');
    expect(printed).toContain('http://relay:[redacted]@proxy.corp:3128/');
  });
});
