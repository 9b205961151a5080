/**
 * The one source of configuration truth: types, defaults, validation and (via zod's JSON Schema
 * export) editor completion all come from this file. Objects are strict: unknown keys are errors.
 */
import { z } from 'zod';
import { parseCidr } from '../net/address-policy.js';
import { adminExposureProblem, exposedListeners, openRelayProblem, smtpListeners } from './exposure.js';
import { parseDurationMs, parseHostPort, parseSizeBytes } from './units.js';

const duration = z
  .union([z.number(), z.string()])
  .transform((value, ctx) => {
    const ms = parseDurationMs(value);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration; use e.g. "90s", "15m", "1h", "5d" or a number of seconds` });
      return z.NEVER;
    }
    return ms;
  });

const size = z
  .union([z.number(), z.string()])
  .transform((value, ctx) => {
    const bytes = parseSizeBytes(value);
    if (bytes === null || bytes <= 0) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a size; use e.g. "3MB", "35MB", "512KiB" or a number of bytes` });
      return z.NEVER;
    }
    return bytes;
  });

const listenAddress = z.string().refine((v) => parseHostPort(v) !== null, {
  message: 'expected "host:port", e.g. "127.0.0.1:2525" or "[::1]:2525"',
});

const httpsUrl = z.string().refine(
  (v) => {
    try {
      const url = new URL(v);
      return url.protocol === 'https:' && (url.pathname === '/' || url.pathname === '');
    } catch {
      return false;
    }
  },
  { message: 'expected an https:// URL with no path, e.g. "https://graph.microsoft.com"' },
);

const secret = z.string().min(1);

const cidr = z.string().refine((v) => parseCidr(v) !== null, { message: 'expected an address or CIDR block, e.g. "10.0.0.0/8", "127.0.0.1/32" or "::1/128"' });

const senderPattern = z.string().regex(/^[^\s@]*@?[^\s@]+$/, 'expected an address or a pattern like "*@contoso.example"');

export const authSchema = z.discriminatedUnion('method', [
  z.strictObject({ method: z.literal('clientSecret'), clientSecret: secret }),
  z.strictObject({
    method: z.literal('certificate'),
    certificateFile: z.string().min(1),
    privateKeyFile: z.string().min(1),
    privateKeyPassphrase: secret.optional(),
  }),
  z.strictObject({ method: z.literal('password'), username: z.string().min(1), password: secret }),
  z.strictObject({
    method: z.literal('deviceCode'),
    /** Where `smtp-graph-relay login` stores the MSAL token cache (mode 0600). */
    tokenCacheFile: z.string().min(1),
    /** Optional: encrypts the token cache at rest (AES-256-GCM with a key derived from this). */
    tokenCacheKey: secret.optional(),
  }),
  z.strictObject({ method: z.literal('federated'), assertionFile: z.string().min(1) }),
]);

/**
 * National clouds: the login host and the Graph root belong together, and tokens are not
 * interchangeable across clouds (Graph "national cloud deployments", graph-api-facts §7).
 */
export const CLOUDS = {
  global: { authorityHost: 'https://login.microsoftonline.com', endpoint: 'https://graph.microsoft.com' },
  usgov: { authorityHost: 'https://login.microsoftonline.us', endpoint: 'https://graph.microsoft.us' },
  usgovdod: { authorityHost: 'https://login.microsoftonline.us', endpoint: 'https://dod-graph.microsoft.us' },
  china: { authorityHost: 'https://login.chinacloudapi.cn', endpoint: 'https://microsoftgraph.chinacloudapi.cn' },
} as const;

const cloudName = z.enum(Object.keys(CLOUDS) as [keyof typeof CLOUDS, ...Array<keyof typeof CLOUDS>]);

/**
 * The login host and Graph root for a graph section: explicit values win, then the section's cloud
 * preset, then `fallback` (for a route: the main graph section's); never with a trailing slash.
 */
export function resolveGraphHosts(
  section: { cloud?: keyof typeof CLOUDS | undefined; authorityHost?: string | undefined; endpoint?: string | undefined },
  fallback: { authorityHost: string; endpoint: string },
): { authorityHost: string; endpoint: string } {
  const preset = section.cloud ? CLOUDS[section.cloud] : fallback;
  return {
    authorityHost: (section.authorityHost ?? preset.authorityHost).replace(/\/+$/, ''),
    endpoint: (section.endpoint ?? preset.endpoint).replace(/\/+$/, ''),
  };
}

const proxyUrl = z.string().refine(
  (v) => {
    try {
      return ['http:', 'https:'].includes(new URL(v).protocol);
    } catch {
      return false;
    }
  },
  { message: 'expected an http:// or https:// proxy URL, e.g. "http://proxy.corp:3128" (credentials may be in the URL)' },
);

/**
 * Exchange Online's default maximum message size is 35 MB (graph-api-facts §1.5, §3.3); messages
 * over one request's ~4 MB go through drafts and upload sessions. SIZE advertises this value.
 */
export const DEFAULT_MAX_MESSAGE_SIZE = 35_000_000;

const routeSchema = z
  .strictObject({
    /** Envelope MAIL FROM or header From (either matches): addresses or "*@domain". */
    senders: z.array(senderPattern).min(1).optional(),
    /** Client addresses (CIDR). */
    clients: z.array(cidr).min(1).optional(),
    /** SMTP AUTH users. */
    authUsers: z.array(z.string().min(1)).min(1).optional(),
    /** The mailbox that sends for this route... */
    mailbox: z.string().min(3).optional(),
    /** ...or a pool of mailboxes to spread load (the one with the least queued mail is chosen). */
    mailboxes: z.array(z.string().min(3)).min(1).optional(),
    /** keep: header From as is (needs Send As); rewrite: From becomes the mailbox, the original goes to Reply-To; reject: 550 5.7.1 unless From is the mailbox. */
    fromPolicy: z.enum(['keep', 'rewrite', 'reject']).prefault('keep'),
    /**
     * Another tenant or app for this route. Cloud, authority and endpoint default to those of the
     * main graph section; proxy, CAs and timeouts always come from it.
     */
    graph: z
      .strictObject({
        tenantId: z.string().min(1),
        clientId: z.string().min(1),
        auth: authSchema,
        cloud: cloudName.optional(),
        authorityHost: httpsUrl.optional(),
        endpoint: httpsUrl.optional(),
      })
      .optional(),
  })
  .refine((r) => (r.mailbox === undefined) !== (r.mailboxes === undefined), { message: 'a route needs exactly one of mailbox or mailboxes' });

export const configSchema = z.strictObject({
  smtp: z
    .strictObject({
      listen: z
        .union([listenAddress, z.array(listenAddress).min(1)])
        .prefault('127.0.0.1:2525')
        .transform((v) => (Array.isArray(v) ? v : [v])),
      /** Name used in the greeting, EHLO reply and Received header; defaults to the OS host name. */
      hostname: z.string().min(1).optional(),
      maxMessageSize: size.prefault(DEFAULT_MAX_MESSAGE_SIZE),
      // 500 recipients per message is Graph's documented maximum (message resource, graph-api-facts §1.6).
      maxRecipients: z.int().min(1).max(500).prefault(500),
      maxConnections: z.int().min(1).prefault(200),
      // RFC 5321 §4.5.3.2 asks servers to wait at least 5 minutes for commands; 60 s keeps idle devices from pinning sockets.
      socketTimeout: duration.prefault('60s'),
      /** Whole-session limit (slowloris), whatever the client's activity. */
      maxSessionDuration: duration.prefault('10m'),
      /** Messages per client address per minute (450 4.7.0 beyond); 0 = unlimited, so alert bursts are never throttled. */
      messagesPerMinutePerClient: z.int().min(0).prefault(0),
      /** Checked at connect: anyone else gets 554 5.7.1 and the connection is closed. */
      allowedClients: z.array(cidr).min(1).optional(),
      tls: z
        .strictObject({
          certFile: z.string().min(1),
          keyFile: z.string().min(1),
          /** SMTPS listeners (TLS from the first byte, usually port 465). */
          implicitListen: z.array(listenAddress).prefault([]),
          // TLSv1 / TLSv1.1 only by explicit opt-in: some old printers need them.
          minVersion: z.enum(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']).prefault('TLSv1.2'),
        })
        .optional(),
      auth: z
        .strictObject({
          /** true: no MAIL FROM without a successful AUTH. */
          required: z.boolean().prefault(false),
          /** AUTH over cleartext on a non-loopback listener (never recommended). */
          allowInsecure: z.boolean().prefault(false),
          users: z
            .array(
              z.strictObject({
                username: z.string().min(1),
                passwordHash: z.string().regex(/^\$scrypt\$/, 'expected a hash from `smtp-graph-relay hash-password`'),
                allowedSenders: z.array(senderPattern).min(1).optional(),
              }),
            )
            .prefault([]),
          // Failed logins allowed per client address within the window before 454 (temporary) answers.
          maxFailures: z.int().min(1).prefault(5),
          failureWindow: duration.prefault('15m'),
        })
        .prefault({}),
    })
    .prefault({})
    .superRefine((smtp, ctx) => {
      const listeners = smtpListeners(smtp);
      const exposed = exposedListeners(listeners);
      // No open relay by default: the same check runs on the listeners a reload cannot move (app.ts).
      const openRelay = openRelayProblem(listeners, smtp);
      if (openRelay) ctx.addIssue({ code: 'custom', path: ['listen'], message: openRelay });
      if (smtp.auth.required && smtp.auth.users.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['auth', 'users'], message: 'auth.required is true but no users are defined: nobody could send. Add users with passwordHash from `smtp-graph-relay hash-password`' });
      }
      if (smtp.auth.users.length > 0 && !smtp.tls && !smtp.auth.allowInsecure && exposed.length > 0) {
        ctx.addIssue({ code: 'custom', path: ['tls'], message: 'AUTH users on a non-loopback listener need smtp.tls (certFile, keyFile) so passwords are not sent in cleartext; or set auth.allowInsecure: true knowingly' });
      }
    }),
  graph: z
    .strictObject({
    tenantId: z.string().min(1),
    clientId: z.string().min(1),
    auth: authSchema,
    mailbox: z.string().min(3).optional(),
    /** Sets authorityHost, endpoint (and so the token scope) together; explicit values still win. */
    cloud: cloudName.prefault('global'),
    authorityHost: httpsUrl.optional(),
    endpoint: httpsUrl.optional(),
    /** HTTP(S) proxy for both the authority and Graph (CONNECT tunnels); HTTPS_PROXY/NO_PROXY are honoured when unset. */
    proxy: proxyUrl.optional(),
    /** Extra PEM bundle trusted for Graph and the authority, on top of system CAs and NODE_EXTRA_CA_CERTS. */
    caFile: z.string().min(1).optional(),
    requestTimeout: duration.prefault('30s'),
  })
    .transform(({ authorityHost, endpoint, ...graph }) => ({ ...graph, ...resolveGraphHosts({ cloud: graph.cloud, authorityHost, endpoint }, CLOUDS.global) })),
  /** First match wins; with no match graph.mailbox sends (or 550 5.7.1 when it is unset). */
  routes: z.array(routeSchema).prefault([]),
  spool: z
    .strictObject({
      dir: z.string().min(1).prefault('/var/spool/smtp-graph-relay'),
      // Group commit: small messages share one fsync before their 250 (spool/fs/journal.ts); false gives
      // every message its own fsyncs (slower under bursts, same guarantee).
      journal: z.boolean().prefault(true),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      // Graph allows four concurrent requests per app and mailbox (throttling-limits, graph-api-facts §3.2).
      maxInFlightPerMailbox: z.int().min(1).max(16).prefault(4),
      retry: z
        .strictObject({
          minDelay: duration.prefault('60s'),
          maxDelay: duration.prefault('1h'),
        })
        .prefault({}),
      // Postfix's maximal_queue_lifetime default is 5 days.
      maxQueueLifetime: duration.prefault('5d'),
      /**
       * To/Cc addresses that are not SMTP envelope recipients: skip (default: To/Cc are limited to the
       * envelope, originals kept as X-Original-To/Cc) or deliver (Graph also sends to them).
       */
      headerOnlyRecipients: z.enum(['skip', 'deliver']).prefault('skip'),
      perMailbox: z
        .strictObject({
          // Exchange Online: 30 messages per minute and 10,000 recipients per day per mailbox
          // (sending limits, graph-api-facts §3.3). Mail beyond waits in the queue instead of being
          // throttled or bounced by Exchange. 0 turns a limit off.
          messagesPerMinute: z.int().min(0).prefault(30),
          recipientsPerDay: z.int().min(0).prefault(10_000),
        })
        .prefault({}),
    })
    .prefault({}),
  bounces: z
    .strictObject({
      /** Send a delivery status notification when a message finally fails. */
      enabled: z.boolean().prefault(true),
      /** Send DSNs here instead of to the envelope sender (e.g. the IT mailbox). */
      to: z.string().min(3).optional(),
    })
    .prefault({}),
  admin: z
    .strictObject({
      /** Metrics, health and queue API; false turns it off. Loopback by default: it can change the queue. */
      listen: z.union([listenAddress, z.literal(false)]).prefault('127.0.0.1:9925'),
      /**
       * Bearer token for every admin endpoint but /healthz, e.g. "${ADMIN_TOKEN}"; optional on
       * loopback, required when admin.listen is not. 16 characters at least (`openssl rand -hex 32`).
       */
      token: z.string().min(16, 'admin.token needs at least 16 characters; generate one with `openssl rand -hex 32`').optional(),
    })
    .prefault({})
    .superRefine((admin, ctx) => {
      const problem = adminExposureProblem(admin);
      if (problem) ctx.addIssue({ code: 'custom', path: ['listen'], message: problem });
    }),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).prefault('info'),
    })
    .prefault({}),
});

export type RelayConfigInput = z.input<typeof configSchema>;
export type RelayConfig = z.output<typeof configSchema>;
export type AuthConfig = RelayConfig['graph']['auth'];

/** Keys whose values are secrets: redacted in --print-config and never logged. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['clientSecret', 'password', 'privateKeyPassphrase', 'passwordHash', 'tokenCacheKey', 'token']);
export type SmtpAuthUser = RelayConfig['smtp']['auth']['users'][number];
export type RouteConfig = RelayConfig['routes'][number];
