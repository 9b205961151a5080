/**
 * The command line as data: every command with its options, one line of help each and an example.
 * `smtp-graph-relay COMMAND --help` prints one entry; parsing is per command, so an option another
 * command takes is still refused here, with our message naming the closest option (a typo such as
 * `--conifg` gets "did you mean --config?" instead of node's generic ERR_PARSE_ARGS text).
 */
import { parseArgs } from 'node:util';
import leven from 'leven';

interface OptionSpec {
  type: 'string' | 'boolean';
  /** Shown after the flag in help, e.g. FILE. */
  arg?: string;
  help: string;
  short?: string;
}

export interface CommandSpec {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  examples: string[];
}

const config: OptionSpec = { type: 'string', arg: 'FILE', help: 'YAML configuration (default: the RELAY_CONFIG environment variable)' };
const json: OptionSpec = { type: 'boolean', help: 'print JSON instead of a table' };
const listen: OptionSpec = { type: 'string', arg: 'HOST:PORT', help: 'override smtp.listen' };
const adminListen: OptionSpec = { type: 'string', arg: 'HOST:PORT', help: 'override admin.listen (console, metrics, health, queue API); "off" disables it' };

export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  serve: {
    usage: 'smtp-graph-relay [serve] [--config FILE] [--listen HOST:PORT] [--admin-listen HOST:PORT|off] [--print-config]',
    summary: 'Run the relay. Without --config (or RELAY_CONFIG) it runs in demo mode against the embedded Graph emulator.',
    options: { config, listen, 'admin-listen': adminListen, 'print-config': { type: 'boolean', help: 'print the effective configuration (secrets redacted) and exit' }, dir: { type: 'string', arg: 'DIR', help: 'demo mode only: where the spool and delivered messages go (default .demo)' } },
    examples: ['smtp-graph-relay serve --config /etc/smtp-graph-relay/relay.yaml'],
  },
  demo: {
    usage: 'smtp-graph-relay demo [--listen HOST:PORT] [--admin-listen HOST:PORT|off] [--dir DIR]',
    summary: 'Demo mode: the relay with the embedded Graph emulator; delivered messages are written under DIR/delivered.',
    options: { listen, 'admin-listen': adminListen, dir: { type: 'string', arg: 'DIR', help: 'spool and delivered messages (default .demo, or RELAY_DEMO_DIR)' }, 'print-config': { type: 'boolean', help: 'print the demo configuration and exit' } },
    examples: ['smtp-graph-relay demo --dir /tmp/relay-demo', 'swaks --server 127.0.0.1:2525 --to someone@example.org'],
  },
  setup: {
    usage: 'smtp-graph-relay setup --config FILE [--no-browser] [--no-open]',
    summary: 'Connect the relay to your tenant: a local page (or terminal questions) with Save and Test; writes FILE when the test passes.',
    options: {
      config: { type: 'string', arg: 'FILE', help: 'the configuration file to write (edited in place, comments kept, when it exists)' },
      'no-browser': { type: 'boolean', help: 'ask the questions in the terminal instead of a page' },
      'no-open': { type: 'boolean', help: 'print the page address without opening a browser' },
    },
    examples: ['smtp-graph-relay setup --config relay.yaml', 'smtp-graph-relay setup --config relay.yaml --no-browser'],
  },
  check: {
    usage: 'smtp-graph-relay check --config FILE [--send-to ADDRESS] [--from ADDRESS]',
    summary: 'Validate the config, get a token, look up the mailbox, optionally send a test message.',
    options: {
      config,
      'send-to': { type: 'string', arg: 'ADDRESS', help: 'send a test message to this address' },
      from: { type: 'string', arg: 'ADDRESS', help: 'test sending as the From address a device uses (Send As)' },
    },
    examples: ['smtp-graph-relay check --config relay.yaml --send-to you@contoso.example'],
  },
  queue: {
    usage: 'smtp-graph-relay queue list [--failed|--deferred|--held] | show ID | retry ID|--all | hold ID | release ID | delete ID | purge --failed --older-than 7d   [--json]',
    summary: 'Inspect and manage the queue (through the running relay, or the spool when it is stopped). Needs only admin (and spool when the relay is stopped) from the config; without --config it reaches the demo relay.',
    options: {
      config,
      json,
      'admin-listen': { type: 'string', arg: 'HOST:PORT', help: 'the relay\'s admin address, instead of admin.listen from the config' },
      dir: { type: 'string', arg: 'DIR', help: 'without --config: the demo directory (default .demo, or RELAY_DEMO_DIR)' },
      all: { type: 'boolean', help: 'retry: every waiting message' },
      failed: { type: 'boolean', help: 'list/purge: failed messages' },
      deferred: { type: 'boolean', help: 'list: deferred messages' },
      held: { type: 'boolean', help: 'list: held messages' },
      'older-than': { type: 'string', arg: 'DURATION', help: 'purge: only messages failed longer ago than this, e.g. 7d' },
    },
    examples: ['smtp-graph-relay queue list --deferred --config relay.yaml', 'smtp-graph-relay queue retry --all --config relay.yaml'],
  },
  'hash-password': {
    usage: 'smtp-graph-relay hash-password',
    summary: 'Print a scrypt hash for smtp.auth.users[].passwordHash. On a terminal it asks twice without echo; otherwise it reads the password from standard input.',
    options: {},
    examples: ['smtp-graph-relay hash-password', 'printf %s "$PASSWORD" | smtp-graph-relay hash-password'],
  },
  login: {
    usage: 'smtp-graph-relay login --config FILE',
    summary: 'Device-code sign-in for graph.auth.method: deviceCode; stores the token cache.',
    options: { config },
    examples: ['smtp-graph-relay login --config relay.yaml'],
  },
  db: {
    usage: 'smtp-graph-relay db migrate --config FILE',
    summary: "Apply the shared queue's schema migrations (spool.backend: postgres); every relay also does at start, under an advisory lock.",
    options: { config },
    examples: ['smtp-graph-relay db migrate --config /etc/smtp-graph-relay/relay.yaml'],
  },
  spool: {
    usage: 'smtp-graph-relay spool import --from DIR --config FILE',
    summary: "Move a stopped single-node relay's file spool (waiting and failed messages) into the shared PostgreSQL queue; safe to run again.",
    options: { config, from: { type: 'string', arg: 'DIR', help: 'the file spool directory (the old spool.dir)' } },
    examples: ['smtp-graph-relay spool import --from /var/spool/smtp-graph-relay --config /etc/smtp-graph-relay/relay.yaml'],
  },
  health: {
    usage: 'smtp-graph-relay health [--config FILE] [--ready]',
    summary: 'Ask the running relay on admin.listen (read from FILE) whether it is alive; exit 0 when it is. For container HEALTHCHECKs.',
    options: { config, ready: { type: 'boolean', help: 'ask /readyz (token and spool) instead of /healthz (process alive)' } },
    examples: ['smtp-graph-relay health --config /etc/smtp-graph-relay/relay.yaml'],
  },
};

const GLOBAL: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', help: 'this help' },
  version: { type: 'boolean', help: 'print the version' },
};

function optionLines(options: Record<string, OptionSpec>): string {
  const rows = Object.entries(options).map(([name, o]) => [`--${name}${o.arg ? ` ${o.arg}` : ''}`, o.help] as const);
  const width = Math.max(0, ...rows.map(([flag]) => flag.length)) + 2;
  return rows.map(([flag, help]) => `  ${flag.padEnd(width)}${help}`).join('\n');
}

export function commandHelp(name: string): string {
  const spec = COMMANDS[name];
  if (!spec) return globalHelp();
  const options = { ...spec.options, help: GLOBAL.help as OptionSpec };
  return `${spec.summary}\n\nUsage:\n  ${spec.usage}\n\nOptions:\n${optionLines(options)}\n\nExample${spec.examples.length > 1 ? 's' : ''}:\n${spec.examples.map((e) => `  ${e}`).join('\n')}\n`;
}

export function globalHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length)) + 2;
  return (
    `smtp-graph-relay - SMTP in, Microsoft Graph sendMail out\n\nUsage:\n  smtp-graph-relay COMMAND [options]\n\nCommands:\n` +
    Object.entries(COMMANDS)
      .map(([name, spec]) => `  ${name.padEnd(width)}${spec.summary}`)
      .join('\n') +
    `\n\nOptions:\n${optionLines(GLOBAL)}\n\n` +
    `"smtp-graph-relay COMMAND --help" shows a command's options and an example.\n` +
    `Start here: smtp-graph-relay demo (no tenant needed), then smtp-graph-relay setup --config relay.yaml\n`
  );
}

/** The closest of `candidates` to `typed` when it is close enough to be a typo (at most 3 edits, under half its length). */
export function closest(typed: string, candidates: readonly string[]): string | null {
  let best: { name: string; distance: number } | null = null;
  for (const name of candidates) {
    const distance = leven(typed, name);
    if (!best || distance < best.distance) best = { name, distance };
  }
  return best && best.distance <= Math.min(3, Math.ceil(typed.length / 2)) ? best.name : null;
}

export type ParsedCommandLine =
  | { kind: 'run'; command: string; values: Record<string, string | boolean | undefined>; positionals: string[] }
  | { kind: 'help'; text: string }
  | { kind: 'version' }
  | { kind: 'usage'; message: string };

/** Parses argv for one command: the first positional names it (default serve). */
export function parseCommandLine(argv: readonly string[]): ParsedCommandLine {
  const first = firstPositional(argv);
  const command = first ?? 'serve';
  const spec = COMMANDS[command];
  if (!spec) {
    if (argv.includes('--version')) return { kind: 'version' };
    const near = closest(command, Object.keys(COMMANDS));
    return { kind: 'usage', message: `unknown command "${command}"${near ? ` - did you mean "${near}"?` : ''}\nCommands: ${Object.keys(COMMANDS).join(', ')}. Run "smtp-graph-relay --help".` };
  }
  const options = { ...spec.options, ...GLOBAL };
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(Object.entries(options).map(([name, o]) => [name, { type: o.type, ...(o.short ? { short: o.short } : {}) }])),
    });
  } catch (err) {
    return { kind: 'usage', message: describeParseError(err as Error & { code?: string }, command, Object.keys(options)) };
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) return { kind: 'help', text: first ? commandHelp(command) : globalHelp() };
  if (values.version) return { kind: 'version' };
  const positionals = first ? parsed.positionals : ['serve', ...parsed.positionals];
  return { kind: 'run', command, values, positionals };
}

/** The command word: the first positional once every command's options (and their values) are set aside. */
function firstPositional(argv: readonly string[]): string | undefined {
  const all = Object.fromEntries(
    [...Object.values(COMMANDS).flatMap((c) => Object.entries(c.options)), ...Object.entries(GLOBAL)].map(([name, o]) => [name, { type: o.type }]),
  );
  return parseArgs({ args: [...argv], allowPositionals: true, strict: false, options: all }).positionals[0];
}

function describeParseError(err: Error & { code?: string }, command: string, known: string[]): string {
  const more = `Run "smtp-graph-relay ${command} --help" for its options.`;
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    // node's message quotes the option as typed: Unknown option '--conifg'.
    const typed = /'(-{1,2}[^']+)'/.exec(err.message)?.[1] ?? '';
    const name = typed.replace(/^-+/, '').split('=')[0] ?? '';
    const near = closest(name, known);
    const elsewhere = Object.entries(COMMANDS).find(([, spec]) => name in spec.options)?.[0];
    const hint = near ? ` - did you mean --${near}?` : elsewhere ? ` - that option belongs to "${elsewhere}"` : '';
    return `${command}: unknown option ${typed}${hint}\n${more}`;
  }
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const flag = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1] ?? 'an option';
    const spec = known.includes(flag.replace(/^-+/, '')) ? (COMMANDS[command]?.options[flag.replace(/^-+/, '')] ?? null) : null;
    return `${command}: ${flag} ${spec?.type === 'string' ? `needs a value (${spec.arg ?? 'VALUE'})` : 'takes no value'}\n${more}`;
  }
  return `${command}: ${err.message}\n${more}`;
}
