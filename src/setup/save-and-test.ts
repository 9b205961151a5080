/**
 * Save and Test: the submission becomes a candidate configuration, validated by the schema, tested
 * by the same stages as `smtp-graph-relay check` (device-code sign-in first for that method), and
 * written only when the test passes. Progress goes to `emit` as it happens, for the page and the
 * terminal alike.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createGraphTransport, msalSettings } from '../app.js';
import { ConfigError, validateConfig } from '../config/load.js';
import type { RelayConfig } from '../config/schema.js';
import { deviceCodeLogin } from '../graph/msal-token-provider.js';
import { TokenError } from '../graph/token-provider.js';
import { runCheckStages, type CheckStep } from '../ops/check.js';
import { diagnoseAadsts } from '../ops/diagnosis.js';
import { readCertificatePair } from './certificate-upload.js';
import { parseEnvFile, readExisting, renderConfig, renderEnvFile, writePrivate } from './config-file.js';
import { applyEdits, planConfig, SEND_TO, type FormSubmission } from './fields.js';

export type SetupEvent =
  | { kind: 'problems'; problems: string[] }
  | { kind: 'step'; step: CheckStep }
  | { kind: 'signin'; message: string }
  | { kind: 'saved'; configFile: string; envFile: string | null; files: string[]; next: string[] };

export interface SaveAndTestOptions {
  configFile: string;
  submission: FormSubmission;
  /** Extra CAs for the check (tests trust the emulator's through graph.caFile instead when they can). */
  extraCaPem?: string[];
  env?: NodeJS.ProcessEnv;
}

export function envFileFor(configFile: string): string {
  // secrets.env next to the file: the name the systemd unit's EnvironmentFile reads.
  return path.join(path.dirname(path.resolve(configFile)), 'secrets.env');
}

export function nextSteps(configFile: string, envFile: string | null): string[] {
  const file = path.resolve(configFile);
  const load = envFile ? `set -a; . ${envFile}; set +a; ` : '';
  return [
    `Try it now: ${load}smtp-graph-relay serve --config ${file}`,
    `As a service (systemd): copy systemd/smtp-graph-relay.service to /etc/systemd/system/, put this file at /etc/smtp-graph-relay/relay.yaml${envFile ? ` and ${path.basename(envFile)} at /etc/smtp-graph-relay/secrets.env` : ''}, then: systemctl daemon-reload && systemctl enable --now smtp-graph-relay`,
    `In Docker: docker run -d -p 127.0.0.1:2525:2525 -v ${file}:/etc/smtp-graph-relay/relay.yaml:ro${envFile ? ` --env-file ${envFile}` : ''} -v relay-spool:/var/spool/smtp-graph-relay smtp-graph-relay (in the container set spool.dir: /var/spool/smtp-graph-relay, and smtp.listen: 0.0.0.0:2525 with smtp.allowedClients)`,
    'Then point a device at the relay, e.g.: swaks --server 127.0.0.1:2525 --to you@example.com',
  ];
}

export async function saveAndTest(options: SaveAndTestOptions, emit: (event: SetupEvent) => void): Promise<boolean> {
  const { configFile, submission } = options;
  const existing = await readExisting(configFile);
  const plan = planConfig(existing.data, submission, configFile);
  if (plan.problems.length > 0) {
    emit({ kind: 'problems', problems: plan.problems });
    return false;
  }
  const envFile = Object.keys(plan.env).length > 0 ? envFileFor(configFile) : null;
  const previousEnv = parseEnvFile(await readFile(envFileFor(configFile), 'utf8').catch(() => ''));
  const env = { ...(options.env ?? process.env), ...previousEnv, ...plan.env };
  // Uploads are tested from a private temporary folder and copied into place only once the test passes.
  const staging = await mkdtemp(path.join(os.tmpdir(), 'sgr-setup-'));
  try {
    const staged = new Map<string, string>();
    for (const file of plan.files) {
      const at = path.join(staging, path.basename(file.path));
      await writeFile(at, file.content, { mode: 0o600 });
      staged.set(file.path, at);
    }
    const candidate = applyEdits(existing.data, plan.edits.map(([keys, value]) => [keys, typeof value === 'string' && staged.has(value) ? staged.get(value) : value] as const));
    let config: RelayConfig;
    try {
      config = validateConfig(candidate, env, path.basename(configFile));
    } catch (err) {
      if (err instanceof ConfigError) {
        emit({ kind: 'problems', problems: err.problems.map((p) => `${p.path || '(top level)'}: ${p.message}`) });
        return false;
      }
      throw err;
    }
    if (config.graph.auth.method === 'certificate' && !(await checkCertificate(config.graph.auth, plan.files, staged, emit))) return false;
    if (config.graph.auth.method === 'deviceCode' && !(await signIn(config, options.extraCaPem ?? [], emit))) return false;
    const sendTo = (submission.values[SEND_TO] ?? '').trim();
    const passed = await runCheckStages(config, { sendTo: sendTo || undefined, extraCaPem: options.extraCaPem ?? [] }, (step) => {
      // The terminal wording names a command-line flag; the page has a field for it.
      emit({ kind: 'step', step: step.stage === 'send' && step.status === 'note' ? { ...step, message: 'no test message sent: give an address under "Send a test message to" to prove sending end to end' } : step });
    });
    if (!passed) return false;

    for (const file of plan.files) await writePrivate(file.path, file.content);
    if (envFile) await writePrivate(envFile, await renderEnvFile(envFile, plan.env));
    await writePrivate(configFile, renderConfig(existing.doc, plan.edits));
    emit({ kind: 'saved', configFile: path.resolve(configFile), envFile, files: plan.files.map((f) => f.path), next: nextSteps(configFile, envFile) });
    return true;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * The certificate and key, read before Entra is asked (certificate-upload.ts): a wrong file gets its
 * own cause and fix. Uploads are stored as the PEM the relay reads (a DER .cer converted, the one
 * block wanted taken from a file holding both).
 */
async function checkCertificate(
  auth: { certificateFile: string; privateKeyFile: string; privateKeyPassphrase?: string | undefined },
  uploads: Array<{ key: string; path: string; content: Buffer }>,
  staged: ReadonlyMap<string, string>,
  emit: (event: SetupEvent) => void,
): Promise<boolean> {
  const fail = (message: string, fix: string) => {
    emit({ kind: 'step', step: { status: 'fail', stage: 'certificate', message, fix } });
    return false;
  };
  let cert: Buffer;
  let key: Buffer;
  try {
    [cert, key] = await Promise.all([readFile(auth.certificateFile), readFile(auth.privateKeyFile)]);
  } catch (err) {
    return fail(`cannot read the certificate or key (${(err as Error).message})`, 'upload the certificate and its private key again');
  }
  const pair = readCertificatePair(cert, key, auth.privateKeyPassphrase, Date.now());
  if ('message' in pair) return fail(pair.message, pair.fix);
  for (const upload of uploads) {
    upload.content = Buffer.from(upload.key === 'graph.auth.certificateFile' ? pair.certPem : pair.keyPem);
    const at = staged.get(upload.path);
    if (at) await writeFile(at, upload.content, { mode: 0o600 });
  }
  const until = new Date(pair.notAfter).toISOString().slice(0, 10);
  emit({ kind: 'step', step: { status: 'ok', stage: 'certificate', message: `certificate ${pair.subject}, thumbprint ${pair.thumbprint}, valid until ${until}; the private key belongs to it` } });
  return true;
}

async function signIn(config: RelayConfig, extraCaPem: string[], emit: (event: SetupEvent) => void): Promise<boolean> {
  const http = await createGraphTransport(config, extraCaPem);
  try {
    const { username } = await deviceCodeLogin(msalSettings(config, http), (message) => emit({ kind: 'signin', message }));
    emit({ kind: 'step', step: { status: 'ok', stage: 'signin', message: `signed in as ${username}` } });
    return true;
  } catch (err) {
    const e = TokenError.from(err, false);
    const d = diagnoseAadsts(e.aadsts);
    emit({ kind: 'step', step: { status: 'fail', stage: 'signin', message: `sign-in${e.aadsts ? ` (AADSTS${e.aadsts})` : ''}: ${d ? d.cause : e.message}`, ...(d ? { fix: d.fix } : {}) } });
    return false;
  } finally {
    await http.close().catch(() => undefined);
  }
}
