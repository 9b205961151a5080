/** Setup's pure parts: the form's edits to a configuration, the file they produce, the env file. */
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { validateConfig } from '../../src/config/load.js';
import { parseEnvFile } from '../../src/setup/config-file.js';
import { renderConfig } from '../../src/setup/config-file.js';
import { applyEdits, FIELDS, planConfig, prefill } from '../../src/setup/fields.js';

const EXISTING = `# Scanner relay - comments must survive setup
graph:
  tenantId: old-tenant # the old tenant
  clientId: old-client
  auth:
    method: password
    username: scanner@contoso.example
    password: hunter2
  mailbox: scanner@contoso.example
# spool on the data disk
spool:
  dir: /data/spool
`;

const base = {
  'graph.tenantId': 'new-tenant',
  'graph.clientId': 'new-client',
  'graph.mailbox': 'alerts@contoso.example',
  'smtp.listen': '127.0.0.1:2525',
  'spool.dir': '/data/spool',
  'graph.cloud': 'global',
};

describe('setup form -> configuration', () => {
  it('names every input by a dotted key of the configuration schema', () => {
    const sample = { graph: { tenantId: 't', clientId: 'c', auth: { method: 'clientSecret', clientSecret: 's' } } };
    for (const field of FIELDS) {
      const [first, second] = field.key.split('.');
      expect(['graph', 'smtp', 'spool']).toContain(first);
      expect(second).toBeTruthy();
    }
    expect(() => validateConfig(sample, {})).not.toThrow();
  });

  it('switches the method: the old method keys go, comments and other keys stay', () => {
    const doc = parseDocument(EXISTING);
    const plan = planConfig(doc.toJS(), { values: { ...base, 'graph.auth.method': 'clientSecret', 'graph.auth.clientSecret': 'new$ecret' }, files: {} }, '/etc/relay/relay.yaml');
    expect(plan.problems).toEqual([]);
    const text = renderConfig(doc, plan.edits);
    expect(text).toContain('# Scanner relay - comments must survive setup');
    expect(text).toContain('# the old tenant');
    expect(text).toContain('# spool on the data disk');
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('username');
    // "$" is escaped as "$$" so the loader does not take it for a ${VAR} reference.
    const config = validateConfig(parseDocument(text).toJS(), {});
    expect(config.graph.auth).toEqual({ method: 'clientSecret', clientSecret: 'new$ecret' });
    expect(config.graph.tenantId).toBe('new-tenant');
    expect(config.spool.dir).toBe('/data/spool');
  });

  it('keeps the current secret when the field is left empty and the method is unchanged', () => {
    const doc = parseDocument(EXISTING);
    const plan = planConfig(doc.toJS(), { values: { ...base, 'graph.auth.method': 'password', 'graph.auth.username': 'scanner@contoso.example' }, files: {} }, '/x/relay.yaml');
    expect(plan.problems).toEqual([]);
    expect(applyEdits(doc.toJS(), plan.edits)).toMatchObject({ graph: { auth: { method: 'password', password: 'hunter2' } } });
  });

  it('asks for a secret that is missing, and for the certificate files of the certificate method', () => {
    const none = planConfig({}, { values: { ...base, 'graph.auth.method': 'clientSecret' }, files: {} }, '/x/relay.yaml');
    expect(none.problems).toEqual(['graph.auth.clientSecret: required for clientSecret']);
    const cert = planConfig({}, { values: { ...base, 'graph.auth.method': 'certificate' }, files: {} }, '/x/relay.yaml');
    expect(cert.problems).toEqual(['graph.auth.certificateFile: upload the certificate (pem)', 'graph.auth.privateKeyFile: upload the private key (pem)']);
    const uploaded = planConfig({}, { values: { ...base, 'graph.auth.method': 'certificate' }, files: { 'graph.auth.certificateFile': Buffer.from('CERT'), 'graph.auth.privateKeyFile': Buffer.from('KEY') } }, '/x/relay.yaml');
    expect(uploaded.problems).toEqual([]);
    expect(uploaded.files.map((f) => f.path)).toEqual(['/x/graph-certificate.pem', '/x/graph-private-key.pem']);
  });

  it('moves secrets to the env file as ${VAR} when asked', () => {
    const plan = planConfig({}, { values: { ...base, 'graph.auth.method': 'clientSecret', 'graph.auth.clientSecret': 'a "quoted" $ecret', 'secrets.envFile': 'on' }, files: {} }, '/x/relay.yaml');
    expect(plan.env).toEqual({ GRAPH_CLIENT_SECRET: 'a "quoted" $ecret' });
    const text = renderConfig(null, plan.edits);
    expect(text).toContain('clientSecret: ${GRAPH_CLIENT_SECRET}');
    expect(text).not.toContain('quoted');
    expect(text).toMatch(/^# smtp-graph-relay configuration, written by/);
    expect(text).not.toMatch(/:\s*\{/); // block style for a person to read
    expect(parseEnvFile('GRAPH_CLIENT_SECRET="a \\"quoted\\" \\$ecret"\n')).toEqual({ GRAPH_CLIENT_SECRET: 'a "quoted" $ecret' });
  });

  it('prefills from the file but never a secret, and offers a spool a non-root user can create', () => {
    const values = prefill(parseDocument(EXISTING).toJS(), '/home/me/relay.yaml', false);
    expect(values['graph.tenantId']).toBe('old-tenant');
    expect(values['graph.auth.password']).toBeUndefined();
    expect(Object.values(values)).not.toContain('hunter2');
    expect(prefill({}, '/home/me/relay.yaml', false)['spool.dir']).toBe('/home/me/spool');
    expect(prefill({}, '/etc/relay.yaml', true)['spool.dir']).toBe('/var/spool/smtp-graph-relay');
  });
});
