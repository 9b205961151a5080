/**
 * The setup form as data: every input is named by its dotted config key (issue 14), so the page,
 * the terminal questions and the file writer share one list. Pure functions turn submitted values
 * into edits of the configuration (a path and a value, or undefined to remove the key).
 */
import path from 'node:path';

export const AUTH_METHODS = ['clientSecret', 'certificate', 'password', 'deviceCode', 'federated'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

export const METHOD_LABELS: Readonly<Record<AuthMethod, string>> = {
  clientSecret: 'Client secret (app-only)',
  certificate: 'Certificate (app-only, recommended)',
  password: "The mailbox's own password (as in the RMM guides)",
  deviceCode: 'Device code (sign in once in a browser)',
  federated: 'Federated credential (workload identity)',
};

export interface FieldSpec {
  key: string;
  label: string;
  kind: 'text' | 'secret' | 'file' | 'select' | 'list';
  /** Shown only for these auth methods. */
  methods?: readonly AuthMethod[];
  options?: readonly string[];
  help?: string;
  placeholder?: string;
  advanced?: boolean;
  required?: boolean;
}

export const FIELDS: readonly FieldSpec[] = [
  { key: 'graph.auth.method', label: 'Authorisation method', kind: 'select', options: AUTH_METHODS, required: true },
  { key: 'graph.tenantId', label: 'Directory (tenant) ID', kind: 'text', required: true, placeholder: '00000000-0000-0000-0000-000000000000', help: "Entra admin center > App registrations > your app > Overview" },
  { key: 'graph.clientId', label: 'Application (client) ID', kind: 'text', required: true, placeholder: '00000000-0000-0000-0000-000000000000' },
  { key: 'graph.auth.clientSecret', label: 'Client secret value', kind: 'secret', methods: ['clientSecret'], help: 'The secret *Value* from Certificates & secrets, not its ID. Never shown back; leave empty to keep the current one.' },
  { key: 'graph.auth.certificateFile', label: 'Certificate (PEM)', kind: 'file', methods: ['certificate'], help: 'The public certificate you uploaded to the app registration.' },
  { key: 'graph.auth.privateKeyFile', label: 'Private key (PEM)', kind: 'file', methods: ['certificate'], help: 'Stored next to the configuration file with mode 0600.' },
  { key: 'graph.auth.privateKeyPassphrase', label: 'Private key passphrase (if any)', kind: 'secret', methods: ['certificate'] },
  { key: 'graph.auth.username', label: 'Mailbox user name', kind: 'text', methods: ['password'], placeholder: 'scanner@contoso.com' },
  { key: 'graph.auth.password', label: 'Mailbox password', kind: 'secret', methods: ['password'], help: 'Never shown back; leave empty to keep the current one.' },
  { key: 'graph.auth.tokenCacheFile', label: 'Token cache file', kind: 'text', methods: ['deviceCode'], help: 'Where the sign-in is kept for the service (mode 0600).' },
  { key: 'graph.auth.assertionFile', label: 'Federated token file', kind: 'text', methods: ['federated'], placeholder: '/var/run/secrets/azure/tokens/azure-identity-token' },
  { key: 'graph.mailbox', label: 'Sending mailbox', kind: 'text', required: true, placeholder: 'alerts@contoso.com' },
  { key: 'smtp.listen', label: 'SMTP listen address', kind: 'text', placeholder: '127.0.0.1:2525', help: 'host:port; 0.0.0.0:2525 for the whole network (then allowed clients are required).' },
  { key: 'smtp.allowedClients', label: 'Allowed clients', kind: 'list', placeholder: '10.0.0.0/8, 192.168.1.20', help: 'Addresses or CIDR blocks that may send, separated by commas or spaces.' },
  { key: 'spool.dir', label: 'Spool directory', kind: 'text', help: 'Where accepted mail waits until Graph takes it.' },
  { key: 'graph.cloud', label: 'Cloud', kind: 'select', options: ['global', 'usgov', 'usgovdod', 'china'], advanced: true },
  { key: 'graph.authorityHost', label: 'Authority host', kind: 'text', advanced: true, placeholder: 'https://login.microsoftonline.com', help: 'Only to override the cloud preset.' },
  { key: 'graph.endpoint', label: 'Graph endpoint', kind: 'text', advanced: true, placeholder: 'https://graph.microsoft.com', help: 'Only to override the cloud preset.' },
];

/** Not configuration: what Save and Test does with it. */
export const SEND_TO = 'check.sendTo';
export const SECRETS_TO_ENV = 'secrets.envFile';

/** The environment variable a secret is stored under when the person asks for an env file. */
export const SECRET_ENV_NAMES: Readonly<Record<string, string>> = {
  'graph.auth.clientSecret': 'GRAPH_CLIENT_SECRET',
  'graph.auth.password': 'GRAPH_PASSWORD',
  'graph.auth.privateKeyPassphrase': 'GRAPH_KEY_PASSPHRASE',
};

export type Edit = readonly [path: string[], value: unknown];

export interface FormSubmission {
  values: Readonly<Record<string, string>>;
  /** Uploaded files by key (certificate, key). */
  files: Readonly<Record<string, Buffer>>;
}

export interface PlannedConfig {
  edits: Edit[];
  /** Files to write next to the config (uploads, by the key that names them), mode 0600. */
  files: Array<{ key: string; path: string; content: Buffer }>;
  /** Environment variables for the env file (secrets), when asked for. */
  env: Record<string, string>;
  problems: string[];
}

export function getIn(obj: unknown, keys: readonly string[]): unknown {
  let cur = obj;
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

/** The values to show in the form: the existing file's, never a secret's. */
export function prefill(existing: unknown, configFile: string, runningAsRoot: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const field of FIELDS) {
    if (field.kind === 'secret' || field.kind === 'file') continue;
    const value = getIn(existing, field.key.split('.'));
    if (Array.isArray(value)) out[field.key] = value.join(', ');
    else if (typeof value === 'string' || typeof value === 'number') out[field.key] = String(value);
  }
  const dir = path.dirname(path.resolve(configFile));
  out['graph.auth.method'] ??= 'clientSecret';
  out['smtp.listen'] ??= '127.0.0.1:2525';
  // The schema's default spool is /var/spool/smtp-graph-relay, which only root (or the systemd unit's
  // StateDirectory) can create; a person trying it out gets a folder next to the file.
  out['spool.dir'] ??= runningAsRoot ? '/var/spool/smtp-graph-relay' : path.join(dir, 'spool');
  out['graph.auth.tokenCacheFile'] ??= path.join(dir, 'token-cache.json');
  out['graph.cloud'] ??= 'global';
  return out;
}

const splitList = (text: string) => text.split(/[\s,]+/).filter(Boolean);

/**
 * The edits a submission makes to the configuration. Empty secrets keep the existing value when
 * the method is unchanged; the auth section is rebuilt for the chosen method (the schema rejects
 * keys of another method).
 */
export function planConfig(existing: unknown, submission: FormSubmission, configFile: string): PlannedConfig {
  const { values, files } = submission;
  const problems: string[] = [];
  const edits: Edit[] = [];
  const written: PlannedConfig['files'] = [];
  const env: Record<string, string> = {};
  const dir = path.dirname(path.resolve(configFile));
  const method = values['graph.auth.method'] as AuthMethod;
  if (!AUTH_METHODS.includes(method)) problems.push(`graph.auth.method: choose one of ${AUTH_METHODS.join(', ')}`);
  const oldAuth = (getIn(existing, ['graph', 'auth']) ?? {}) as Record<string, unknown>;
  const sameMethod = oldAuth.method === method;
  const toEnv = values[SECRETS_TO_ENV] === 'on' || values[SECRETS_TO_ENV] === 'yes';

  for (const field of FIELDS) {
    if (field.methods && !field.methods.includes(method)) continue;
    const keys = field.key.split('.');
    const raw = (values[field.key] ?? '').trim();
    if (field.kind === 'file') {
      const upload = files[field.key];
      const target = path.join(dir, field.key === 'graph.auth.certificateFile' ? 'graph-certificate.pem' : 'graph-private-key.pem');
      if (upload && upload.length > 0) {
        written.push({ key: field.key, path: target, content: upload });
        edits.push([keys, target]);
      } else if (sameMethod && typeof oldAuth[keys[2] as string] === 'string') {
        edits.push([keys, oldAuth[keys[2] as string]]);
      } else problems.push(`${field.key}: upload the ${field.label.toLowerCase()}`);
      continue;
    }
    if (field.kind === 'secret') {
      const envName = SECRET_ENV_NAMES[field.key] as string;
      if (raw) {
        if (toEnv) {
          env[envName] = raw;
          edits.push([keys, `\${${envName}}`]);
        } else edits.push([keys, raw.replace(/\$/g, '$$$$')]);
      } else if (sameMethod && typeof oldAuth[keys[2] as string] === 'string') {
        edits.push([keys, oldAuth[keys[2] as string]]);
      } else if (field.key !== 'graph.auth.privateKeyPassphrase') problems.push(`${field.key}: required for ${method}`);
      continue;
    }
    if (field.kind === 'list') {
      edits.push([keys, raw ? splitList(raw) : undefined]);
      continue;
    }
    if (!raw) {
      if (field.required || (field.methods && field.key !== 'graph.auth.method')) problems.push(`${field.key}: required`);
      else edits.push([keys, undefined]);
      continue;
    }
    edits.push([keys, raw]);
  }
  // Keys of another method go: the auth section holds exactly the chosen method's keys.
  for (const key of Object.keys(oldAuth)) {
    if (!edits.some(([keys]) => keys[0] === 'graph' && keys[1] === 'auth' && keys[2] === key)) edits.push([['graph', 'auth', key], undefined]);
  }
  return { edits, files: written, env, problems };
}

/** Applies edits to a plain object (a copy): what the file will hold, for validation before writing. */
export function applyEdits(base: unknown, edits: readonly Edit[]): Record<string, unknown> {
  const root = structuredClone((base ?? {}) as Record<string, unknown>);
  for (const [keys, value] of edits) {
    let cur: Record<string, unknown> = root;
    for (const k of keys.slice(0, -1)) {
      if (cur[k] === null || typeof cur[k] !== 'object') cur[k] = {};
      cur = cur[k] as Record<string, unknown>;
    }
    const last = keys[keys.length - 1] as string;
    if (value === undefined) delete cur[last];
    else cur[last] = value;
  }
  return root;
}
