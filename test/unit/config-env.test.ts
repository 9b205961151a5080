/**
 * Issue 11 item 14 (parsing side): ${VAR} for numbers and booleans, malformed references named,
 * and a YAML alias bomb refused as a configuration error. The exit codes: config-edge-cases.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { aliasBomb } from '../helpers/alias-bomb.js';

const graph = `
graph:
  tenantId: t
  clientId: c
  auth: { method: clientSecret, clientSecret: "\${SECRET}" }
  mailbox: relay@contoso.example
`;

function problems(text: string, env: NodeJS.ProcessEnv): string[] {
  try {
    parseConfigText(text, env, 'relay.yaml');
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
}

describe('${VAR} in typed values', () => {
  it('stands for a number or a boolean where the schema wants one, quoted or not', () => {
    const text = `${graph}smtp:\n  maxConnections: \${MAX_CONN}\n  maxRecipients: "\${MAX_RCPT}"\n  auth:\n    allowInsecure: \${INSECURE}\nspool:\n  journal: \${JOURNAL}\n`;
    const config = parseConfigText(text, { SECRET: 's', MAX_CONN: '250', MAX_RCPT: '50', INSECURE: 'true', JOURNAL: 'False' });
    expect(config.smtp.maxConnections).toBe(250);
    expect(config.smtp.maxRecipients).toBe(50);
    expect(config.smtp.auth.allowInsecure).toBe(true);
    expect(config.spool.journal).toBe(false);
  });

  it('a string stays a string: an all-digit secret is not turned into a number', () => {
    expect(parseConfigText(graph, { SECRET: '12345' }).graph.auth).toEqual({ method: 'clientSecret', clientSecret: '12345' });
  });

  it('a value that is not a number is reported with the reference it came from, and the schema rules still apply', () => {
    expect(problems(`${graph}smtp:\n  maxConnections: \${MAX_CONN}\n`, { SECRET: 's', MAX_CONN: 'lots' })).toEqual(['smtp.maxConnections: Invalid input: expected number, received string (the value of ${MAX_CONN})']);
    expect(problems(`${graph}smtp:\n  maxRecipients: \${MAX_RCPT}\n`, { SECRET: 's', MAX_RCPT: '900' }).join('\n')).toMatch(/^smtp\.maxRecipients: Too big/);
    expect(problems(`${graph}smtp:\n  maxConnections: "x\${MAX_CONN}"\n`, { SECRET: 's', MAX_CONN: '5' }).join('\n')).toContain('expected number, received string');
  });
});

describe('malformed references', () => {
  it('`${ VAR }` is an error naming it and the fix', () => {
    expect(problems(`${graph}admin:\n  token: "\${ ADMIN_TOKEN }"\n`, { SECRET: 's', ADMIN_TOKEN: 'x'.repeat(20) })).toEqual([
      'admin.token: "${ ADMIN_TOKEN }" is not a valid environment reference: write ${ADMIN_TOKEN} (no spaces inside the braces); $$ stands for a literal "$"',
    ]);
  });

  it('an empty, a numeric and an unclosed reference are errors; $$ stays a literal $', () => {
    const found = problems(`${graph}bounces:\n  to: "\${}"\nsmtp:\n  hostname: "\${1X}"\nlog:\n  level: "\${LEVEL"\n`, { SECRET: 's' }).join('\n');
    expect(found).toContain('bounces.to: "${}" is not a valid environment reference');
    expect(found).toContain('smtp.hostname: "${1X}" is not a valid environment reference: a name is letters, digits and _');
    expect(found).toContain('log.level: unclosed "${"');
    expect(parseConfigText(graph, { SECRET: 'a$$b' }).graph.auth).toEqual({ method: 'clientSecret', clientSecret: 'a$$b' });
    expect(parseConfigText(graph.replace('"${SECRET}"', () => '"p$${NOT_A_VAR}"'), {}).graph.auth).toEqual({ method: 'clientSecret', clientSecret: 'p${NOT_A_VAR}' });
  });
});

describe('YAML aliases', () => {
  it('an alias bomb is a configuration error, refused at once', () => {
    const started = Date.now();
    const found = problems(`${graph}${aliasBomb()}`, { SECRET: 's' });
    expect(found.join('\n')).toMatch(/YAML could not be read: Excessive alias count/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('a few ordinary aliases still work', () => {
    const text = `${graph}routes:\n  - senders: &branch ["*@branch1.example"]\n    mailbox: a@contoso.example\n  - senders: *branch\n    clients: ["10.0.0.0/8"]\n    mailbox: b@contoso.example\n`;
    expect(parseConfigText(text, { SECRET: 's' }).routes.map((r) => r.senders)).toEqual([['*@branch1.example'], ['*@branch1.example']]);
  });
});
