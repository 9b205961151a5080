/**
 * The cluster deployment files (deploy/), checked without Docker or a Kubernetes API: they parse,
 * the relays' configuration is valid against the schema, and the properties a cluster needs are
 * there (two replicas, readiness on /readyz, a disruption budget, a database the relays wait for).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';

const root = path.resolve(__dirname, '../..');
const env = { PGPASSWORD: 'p', GRAPH_CLIENT_SECRET: 's', ADMIN_TOKEN: '0123456789abcdef0123456789abcdef' };

describe('deploy/ for several relays', () => {
  it('compose: PostgreSQL and two relays that wait for it, each checked on /readyz, sharing one valid configuration', () => {
    const compose = parse(readFileSync(path.join(root, 'deploy/compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, { depends_on?: unknown; healthcheck?: { test: string[] }; image?: string }> };
    const relays = Object.entries(compose.services).filter(([name]) => name.startsWith('relay'));
    expect(relays).toHaveLength(2);
    expect(compose.services.db?.image).toMatch(/^postgres:/);
    for (const [, relay] of relays) {
      expect(relay.depends_on).toEqual({ db: { condition: 'service_healthy' } });
      expect(relay.healthcheck?.test.join(' ')).toContain('health --ready');
    }
    const config = parseConfigText(readFileSync(path.join(root, 'deploy/relay-cluster.yaml'), 'utf8'), env, 'relay-cluster.yaml');
    expect(config.spool.backend).toBe('postgres');
    expect(config.spool.postgres.url).toBe('postgres://relay:p@db:5432/relay');
    expect(config.admin.token).toBe(env.ADMIN_TOKEN);
  });

  it('kubernetes: a Deployment of 2 replicas ready on /readyz, a Service, a PodDisruptionBudget and a valid configuration', () => {
    const docs = parseAllDocuments(readFileSync(path.join(root, 'deploy/kubernetes/relay.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    const kind = (k: string) => docs.find((d) => d.kind === k);
    const deployment = kind('Deployment');
    expect(deployment?.spec.replicas).toBe(2);
    const container = deployment?.spec.template.spec.containers[0];
    expect(container.readinessProbe.exec.command.join(' ')).toContain('health --ready');
    expect(container.env.map((e: { name: string }) => e.name)).toContain('ADMIN_TOKEN');
    expect(container.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(kind('Service')?.spec.selector).toEqual(deployment?.spec.selector.matchLabels);
    expect(kind('PodDisruptionBudget')?.spec.minAvailable).toBe(1);
    const config = parseConfigText(kind('ConfigMap')?.data['relay.yaml'], env, 'configmap');
    expect(config.spool.backend).toBe('postgres');
  });
});
