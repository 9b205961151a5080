/**
 * The deployment files, checked the way the build machines can (no Docker engine here):
 * systemd-analyze verify for the unit (CI installs systemd), a Dockerfile linter, and the
 * security properties both must have.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validate } from 'dockerfile-utils';
import { describe, expect, it } from 'vitest';
import { itWithTool } from '../helpers/prerequisites.js';
import { runProcess } from '../helpers/processes.js';

const root = path.resolve(__dirname, '../..');

describe('systemd unit', () => {
  const unit = readFileSync(path.join(root, 'systemd/smtp-graph-relay.service'), 'utf8');
  const setting = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]);

  itWithTool('systemd-analyze', '.ci/run installs the systemd package')('passes systemd-analyze verify without warnings', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'sgr-unit-'));
    try {
      copyFileSync(path.join(root, 'systemd/smtp-graph-relay.service'), path.join(dir, 'smtp-graph-relay.service'));
      const { stderr } = await runProcess('systemd-analyze', ['verify', path.join(dir, 'smtp-graph-relay.service')], { timeoutMs: 30_000, waitingFor: 'systemd-analyze verify', check: true });
      expect(stderr).not.toMatch(/Unknown key|Unknown section|bad unit file|Failed to/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs hardened as a dedicated user with its spool in StateDirectory', () => {
    expect(setting('DynamicUser')).toEqual(['yes']);
    expect(setting('StateDirectory')).toEqual(['smtp-graph-relay']);
    expect(setting('ConfigurationDirectory')).toEqual(['smtp-graph-relay']);
    for (const [key, value] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['Restart', 'on-failure']]) {
      expect(setting(key as string)).toEqual([value]);
    }
    expect(setting('RestrictAddressFamilies')[0]).toContain('AF_INET');
    expect(setting('SystemCallFilter').length).toBeGreaterThan(0);
    expect(setting('CapabilityBoundingSet')).toEqual(['']);
    expect(setting('EnvironmentFile')[0]).toContain('secrets.env');
    // The relay drains for 10 s on SIGTERM; systemd must wait longer before SIGKILL.
    expect(Number.parseInt(setting('TimeoutStopSec')[0] ?? '0', 10)).toBeGreaterThan(10);
    expect(setting('RestartPreventExitStatus')).toEqual(['78']);
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(path.join(root, 'Dockerfile'), 'utf8');

  it('has no linter findings', () => {
    const problems = validate(text).map((d) => `${d.range.start.line + 1}: ${d.message}`);
    expect(problems).toEqual([]);
  });

  it('is multi-stage, runs as non-root with tini, keeps the spool in a volume and has a health check', () => {
    expect(text.match(/^FROM /gm)).toHaveLength(2);
    expect(text).toMatch(/npm prune --omit=dev/);
    expect(text).toMatch(/^USER node$/m);
    expect(text).toMatch(/^VOLUME \["\/var\/spool\/smtp-graph-relay"\]$/m);
    // The health check follows admin.listen from the configuration (issue 14), not a fixed port.
    expect(text).toMatch(/^HEALTHCHECK .*\n\s+CMD \["node", "\/app\/dist\/main\.js", "health"\]$/m);
    // Demo mode in the image needs a directory the node user can write (/app/.demo gave EACCES).
    const demoDir = /RELAY_DEMO_DIR=(\S+)/.exec(text)?.[1] ?? 'unset';
    expect(text).toMatch(new RegExp(`chown node:node [^\\n]*${demoDir}`));
    expect(text).toMatch(/^ENTRYPOINT \["\/usr\/bin\/tini", "--", "node", "\/app\/dist\/main\.js"\]$/m);
    expect(text).toMatch(/^CMD \["serve"\]$/m);
  });
});
